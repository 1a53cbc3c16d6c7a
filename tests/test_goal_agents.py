"""Goal-conditioned agents (contrastive RL, TD-InfoNCE, GCBC): which parameters each update moves,
losses against their definitions, goals from the right trajectory, learning a tiny goal task,
and a short online run on PointMaze."""


import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from crl import contrastive as C
from crl import encoders as crl_encoders
from crl import train
from crl.agents import gcbc, gcrl, td_infonce
from crl.replay import EpisodeReplay
from crl.rl import actor_goal_batch

STATE, GOAL, ACTION = 4, 2, 2


def goal_spaces(state=STATE, goal=GOAL, action=ACTION):
    box = lambda n: gym.spaces.Box(-np.inf, np.inf, (n,), np.float32)  # noqa: E731
    obs = gym.spaces.Dict({"observation": box(state), "achieved_goal": box(goal), "desired_goal": box(goal)})
    return obs, gym.spaces.Box(-1, 1, (action,), np.float32)


def make(module, **overrides):
    torch.manual_seed(0)
    config = module.Config(**({"hidden_dims": (32, 32), "batch_size": 8} | overrides))
    return module.Agent(*goal_spaces(), config)


def goal_batch(B=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    randn = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    return {"observation": randn(B, STATE), "next_observation": randn(B, STATE),
            "achieved_goal": randn(B, GOAL), "next_achieved_goal": randn(B, GOAL),
            "action": torch.rand(B, ACTION, generator=g) * 2 - 1, "goal": randn(B, GOAL)}


def params(module):
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def changed(before, module):
    return {name for name, p in module.named_parameters() if not torch.equal(before[name], p)}


# -- the critic ---------------------------------------------------------------------------------


@pytest.mark.parametrize("energy", ["dot", "cosine", "neg_l2", "bilinear"])
def test_critic_matrix_has_each_rows_own_goal_on_the_diagonal(energy):
    torch.manual_seed(0)
    critic = C.ContrastiveCritic(6, GOAL, (16,), 8, ensemble=2, energy=energy, last_layer_scale=None)
    x, g = torch.randn(5, 6), torch.randn(5, GOAL)
    logits = critic(x, g)
    assert logits.shape == (2, 5, 5)
    torch.testing.assert_close(logits.diagonal(dim1=-2, dim2=-1), critic.pairwise(x, g))
    # entry (i, j) is row i's input against goal j: permuting the goals permutes the columns
    perm = torch.tensor([3, 0, 4, 1, 2])
    torch.testing.assert_close(critic(x, g[perm]), logits[:, :, perm])
    phi, psi = critic.representations(x, g)
    if energy == "dot":
        torch.testing.assert_close(logits, phi @ psi.transpose(-1, -2))


def test_gcrl_cosine_temperature_scales_the_logits():
    x, g = torch.randn(5, STATE + ACTION), torch.randn(5, GOAL)
    logits = {t: make(gcrl, energy="cosine", cosine_temperature=t, last_layer_scale=None).critic(x, g)
              for t in (0.1, 0.5)}
    torch.testing.assert_close(logits[0.5], logits[0.1] * 0.2)  # the same init (seed 0), 1/t apart
    assert logits[0.1].abs().max() <= 10 + 1e-5  # |cos| <= 1 at the default temperature 0.1


def test_near_zero_last_layer_starts_all_logits_near_zero():
    torch.manual_seed(0)
    critic = C.ContrastiveCritic(6, GOAL, (64, 64), 16, last_layer_scale=1e-12)
    assert critic(torch.randn(32, 6), torch.randn(32, GOAL)).abs().max() < 1e-9


# -- contrastive RL --------------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["nce", "infonce", "infonce_symmetric"])
def test_gcrl_critic_loss_is_its_definition(loss):
    agent = make(gcrl, loss=loss, last_layer_scale=None)
    batch = goal_batch()
    state, action, goal = batch["observation"], batch["action"], batch["goal"]
    logits = agent.critic(torch.cat([state, action], -1), goal).detach()
    eye = torch.eye(8)
    per_member = []
    for member in logits:
        if loss == "nce":
            per_member.append(F.binary_cross_entropy_with_logits(member, eye))
        elif loss == "infonce":
            per_member.append(F.cross_entropy(member, torch.arange(8)) + 0.01 * member.logsumexp(1).square().mean())
        else:
            per_member.append(0.5 * (F.cross_entropy(member, torch.arange(8)) + F.cross_entropy(member.T, torch.arange(8))))
    metrics = agent.update_critic(state, action, goal)
    torch.testing.assert_close(metrics["critic_loss"], torch.stack(per_member).mean())


def test_gcrl_updates_move_only_their_own_networks():
    agent = make(gcrl, last_layer_scale=None)  # near-zero last layers: first steps barely reach the others
    batch = goal_batch()
    state, action, goal = batch["observation"], batch["action"], batch["goal"]
    before = {k: params(m) for k, m in agent.modules().items()}
    agent.update_critic(state, action, goal)
    assert changed(before["critic"], agent.critic) == set(before["critic"])
    assert not changed(before["actor"], agent.actor)
    before = {k: params(m) for k, m in agent.modules().items()}
    agent.critic.zero_grad(set_to_none=True)
    agent.update_actor(state, action, goal)
    assert changed(before["actor"], agent.actor) == set(before["actor"])
    assert not changed(before["critic"], agent.critic)
    assert all(p.grad is None for p in agent.critic.parameters())  # no backward into the critic at all
    assert changed(before["temperature"], agent.temperature)


def test_gcrl_actor_loss_is_alpha_log_pi_minus_the_smaller_critic(monkeypatch):
    agent = make(gcrl, actor_goals="future", entropy_coef=0.3, last_layer_scale=None)
    batch = goal_batch()
    state, goal = batch["observation"], batch["goal"]
    fixed_action, fixed_log_prob = torch.rand(8, ACTION) * 2 - 1, torch.randn(8, requires_grad=True)
    monkeypatch.setattr(agent.actor, "forward", lambda features, deterministic=False: (fixed_action, fixed_log_prob))
    with torch.no_grad():
        logits = agent.critic(torch.cat([state, fixed_action], -1), goal)  # (2, B, B)
        expected = (0.3 * fixed_log_prob - logits.diagonal(dim1=-2, dim2=-1).min(0).values).mean()
    metrics = agent.update_actor(state, batch["action"], goal)
    torch.testing.assert_close(metrics["actor_loss"], expected)


def test_the_eysenbach2022_preset_has_one_critic_and_updates():
    from crl import train

    _, config = train.build_configs("gcrl", "eysenbach2022", {"hidden_dims": (32, 32), "batch_size": 8})
    assert (config.twin, config.repr_dim, config.layer_norm) == (False, 64, False)
    agent = gcrl.Agent(*goal_spaces(), config)
    batch = goal_batch()
    with torch.no_grad():
        logits = agent.critic(torch.cat([batch["observation"], batch["action"]], -1), batch["goal"])
    assert logits.shape == (1, 8, 8)
    assert all(np.isfinite(v) for v in agent.update(batch, step=1).values())


def test_behaviour_cloning_needs_goals_from_the_future():
    for module in (gcrl, td_infonce):
        with pytest.raises(ValueError, match="actor_goals"):
            make(module, actor_goals="random", bc_coef=0.1)


def test_gcrl_actor_goals_and_behaviour_cloning():
    agent = make(gcrl, actor_goals="both", bc_coef=1.0)
    batch = goal_batch()
    state, action, goal = batch["observation"], batch["action"], batch["goal"]
    s, a, g, is_future = actor_goal_batch(state, action, goal, "both")
    assert len(s) == 16 and is_future[:8].all() and not is_future[8:].any()
    torch.testing.assert_close(g[:8], goal)
    assert sorted(map(tuple, g[8:].tolist())) == sorted(map(tuple, goal.tolist()))  # the same goals, re-paired
    # with bc_coef = 1 the future rows carry only -log pi(a_data | s, g)
    expected_bc = -agent.actor.log_prob(torch.cat([state, goal], -1), action).mean()
    metrics = agent.update_actor(state, action, goal)
    torch.testing.assert_close(metrics["bc_loss"], expected_bc.detach())


# -- TD-InfoNCE ------------------------------------------------------------------------------


def test_td_infonce_critic_loss_uses_the_target_critic_at_the_next_state(monkeypatch):
    agent = make(td_infonce)
    batch = goal_batch()
    state, action, next_state = batch["observation"], batch["action"], batch["next_observation"]
    next_goal, commanded = batch["next_achieved_goal"], batch["achieved_goal"]
    # a known next action a'_i = tanh(state[:, :2] of s'), so the expected loss can be built by hand
    monkeypatch.setattr(agent, "policy", lambda s, g, deterministic=False: torch.tanh(s[:, :ACTION] + g))
    with torch.no_grad():  # make the target differ from the online critic
        for p in agent.critic_target.parameters():
            p.add_(0.1 * torch.randn_like(p))
    candidates = torch.roll(commanded, -1, 0)
    x = torch.cat([state, action, commanded], -1)
    with torch.no_grad():
        next_action = torch.tanh(next_state[:, :ACTION] + commanded)
        target = agent.critic_target(torch.cat([next_state, next_action, commanded], -1), candidates)
        weights = target.min(0).values.softmax(-1)
        expected = []
        for next_l, future_l in zip(agent.critic(x, next_goal), agent.critic(x, candidates)):
            term1 = F.cross_entropy(next_l, torch.arange(8))
            term2 = -(weights * future_l.log_softmax(-1)).sum(-1).mean()
            expected.append((1 - 0.99) * term1 + 0.99 * term2)
    target_before = params(agent.critic_target)
    metrics = agent.update_critic(state, action, next_state, next_goal, commanded)
    torch.testing.assert_close(metrics["critic_loss"], torch.stack(expected).mean())
    assert not changed(target_before, agent.critic_target)


def test_td_infonce_representations_are_normalised():
    agent = make(td_infonce, repr_norm_temperature=0.5)
    logits = agent.critic(torch.randn(8, STATE + ACTION + GOAL), torch.randn(8, GOAL))
    assert logits.abs().max() <= 1 / 0.5 + 1e-5  # cosine / temperature


def test_td_infonce_updates_and_polyak_target():
    agent = make(td_infonce, tau=0.5)
    batch = goal_batch()
    before = {k: params(m) for k, m in agent.modules().items()}
    agent.update_actor(batch["observation"], batch["action"], batch["goal"])
    assert changed(before["actor"], agent.actor) == set(before["actor"])
    assert not changed(before["critic"], agent.critic)
    assert all(p.grad is None for p in agent.critic.parameters())
    agent.update(batch, step=1)
    for name, p in agent.critic_target.named_parameters():
        online = dict(agent.critic.named_parameters())[name]
        # after one update: target = 0.5 * old target + 0.5 * new online (old target = old online)
        torch.testing.assert_close(p, 0.5 * before["critic_target"][name] + 0.5 * online.detach())


def test_td_infonce_actor_loss_is_cross_entropy_over_the_smaller_critic(monkeypatch):
    agent = make(td_infonce, actor_goals="future")
    batch = goal_batch()
    state, goal = batch["observation"], batch["goal"]
    fixed = (torch.rand(8, ACTION) * 2 - 1).requires_grad_()
    monkeypatch.setattr(agent, "policy", lambda s, g, deterministic=False: fixed + 0 * s[:, :1])
    with torch.no_grad():
        logits = agent.critic(torch.cat([state, fixed, goal], -1), goal).min(0).values
        expected = F.cross_entropy(logits, torch.arange(8))
    torch.testing.assert_close(agent.update_actor(state, batch["action"], goal)["actor_loss"], expected)


def test_td_infonce_offline_actor_blends_mse_behaviour_cloning(monkeypatch):
    agent = make(td_infonce, actor_goals="future", bc_coef=1.0)
    batch = goal_batch()
    fixed = torch.full((8, ACTION), 0.25, requires_grad=True)
    monkeypatch.setattr(agent, "policy", lambda s, g, deterministic=False: fixed + 0 * s[:, :1])
    metrics = agent.update_actor(batch["observation"], batch["action"], batch["goal"])
    torch.testing.assert_close(metrics["bc_loss"], (fixed - batch["action"]).square().mean())


# -- GCBC ---------------------------------------------------------------------------------------


def test_gcbc_loss_is_the_negative_log_likelihood_of_the_dataset_action():
    agent = make(gcbc)
    batch = goal_batch()
    features = torch.cat([batch["observation"], batch["goal"]], -1)
    expected = -agent.actor.log_prob(features, batch["action"]).mean().item()
    assert agent.update(batch, 1)["bc_loss"] == pytest.approx(expected, rel=1e-6)


# -- goals come from the right trajectory ----------------------------------------------------


def test_goal_batches_take_goals_from_the_same_episode_later_on():
    """The agents ask for achieved-goal relabelling; each goal is a later step of the row's episode."""
    replay = EpisodeReplay(10_000, seed=0)
    for episode in range(6):
        T = 20 + episode
        steps = np.arange(T + 1, dtype=np.float32)
        obs = {"observation": np.stack([np.full(T + 1, episode, np.float32), steps, steps, steps], 1),
               "achieved_goal": np.stack([np.full(T + 1, episode, np.float32), steps], 1),
               "desired_goal": np.zeros((T + 1, 2), np.float32)}
        replay.add_episode(obs, np.zeros((T, ACTION), np.float32), np.zeros(T, np.float32))
    for module in (gcrl, td_infonce, gcbc):
        batch = replay.sample(256, kind=make(module).batch_kind, **make(module).sampler_options())
        episode, step = batch["observation"][:, 0], batch["observation"][:, 1]
        assert torch.equal(batch["goal"][:, 0], episode)  # same trajectory
        assert (batch["goal"][:, 1] > step).all()  # strictly later
        torch.testing.assert_close(batch["next_achieved_goal"][:, 1], step + 1)


# -- learning ---------------------------------------------------------------------------------


class PointGoal(gym.Env):
    """2-D point: s' = clip(s + 0.2 a), start and goal uniform in [-1, 1]^2, 20 steps, success
    within 0.2 of the goal."""

    def __init__(self):
        self.observation_space, self.action_space = goal_spaces(state=2)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.pos, self.goal = self.np_random.uniform(-1, 1, (2, 2)).astype(np.float32)
        self.t = 0
        return self._obs(), {}

    def _obs(self):
        return {"observation": self.pos.copy(), "achieved_goal": self.pos.copy(), "desired_goal": self.goal.copy()}

    def step(self, action):
        self.pos = np.clip(self.pos + 0.2 * np.clip(action, -1, 1), -1, 1).astype(np.float32)
        self.t += 1
        success = np.linalg.norm(self.pos - self.goal) < 0.2
        distance = float(np.linalg.norm(self.pos - self.goal))
        return self._obs(), float(success), False, self.t >= 20, {"success": success, "distance": distance}


def run_episodes(agent, env, replay, episodes, explore, seed):
    successes = []
    for k in range(episodes):
        obs, _ = env.reset(seed=seed + k)
        replay is not None and replay.add_first(obs)
        done, reached = False, False
        while not done:
            batched = {key: v[None] for key, v in obs.items()}
            action = agent.act(batched, explore=explore)[0] if agent else env.action_space.sample()
            obs, reward, terminated, truncated, info = env.step(action)
            replay is not None and replay.add(action, reward, obs, terminated, truncated)
            reached |= bool(info["success"])
            done = terminated or truncated
        successes.append(reached)
    return float(np.mean(successes))


@pytest.mark.parametrize("module,updates", [(gcrl, 1500), (td_infonce, 1500)])
def test_agent_learns_to_reach_goals(module, updates):
    torch.manual_seed(0)
    env = PointGoal()
    env.action_space.seed(0)
    agent = module.Agent(env.observation_space, env.action_space,
                         module.Config(hidden_dims=(64, 64), batch_size=128, actor_lr=1e-3, critic_lr=1e-3))
    replay = EpisodeReplay(50_000, seed=0)
    random_success = run_episodes(None, env, replay, 200, explore=True, seed=0)
    for step in range(1, updates + 1):
        agent.update(replay.sample(128, kind="goals", **agent.sampler_options()), step)
    success = run_episodes(agent, env, None, 50, explore=False, seed=10_000)
    assert random_success < 0.35
    assert success >= 0.8, (random_success, success)


def test_short_online_run_on_pointmaze_logs_success(tmp_path):
    run, config = train.build_configs("gcrl", "cpu-smoke", {
        "env": "maze:PointMaze_UMaze-v3", "frames": 600, "seed_frames": 300, "eval_every_frames": 300,
        "eval_episodes": 2, "hidden_dims": (16, 16), "batch_size": 16})
    result = train.train("gcrl", run, config, tmp_path)
    assert {"success", "final_success", "episode_return"} <= set(result)
    header = (tmp_path / "eval.csv").read_text().splitlines()[0].split(",")
    assert "success" in header and "frames" in header
    assert "critic_loss" in (tmp_path / "train.csv").read_text().splitlines()[0]


# -- goals given as images ---------------------------------------------------------------------


def pixel_spaces(size=32):
    image = gym.spaces.Box(0, 255, (3, size, size), np.uint8)
    return gym.spaces.Dict({"observation": image, "desired_goal": image}), gym.spaces.Box(-1, 1, (2,), np.float32)


def pixel_batch(B=4, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = lambda: torch.randint(0, 256, (B, 3, size, size), dtype=torch.uint8, generator=g)  # noqa: E731
    return {"observation": image(), "next_observation": image(), "goal": image(),
            "action": torch.rand(B, 2, generator=g) * 2 - 1}


@pytest.mark.parametrize("module", [gcrl, td_infonce, gcbc])
def test_image_goals_use_conv_encoders_trained_by_the_right_loss(module, monkeypatch):
    torch.manual_seed(0)
    agent = module.Agent(*pixel_spaces(), module.Config(hidden_dims=(16,), batch_size=4, feature_dim=8))
    assert agent.sampler_options()["goal_field"] == "observation"  # future images are the goals
    shifted = []
    real_shift = crl_encoders.random_shift
    monkeypatch.setattr(crl_encoders, "random_shift", lambda x, pad: shifted.append(x) or real_shift(x, pad))
    before = {k: params(m) for k, m in agent.modules().items()}
    agent.update(pixel_batch(), step=1)
    batch = pixel_batch()  # the same images again: both observations and goals were shifted
    assert any(torch.equal(x, batch["observation"]) for x in shifted)
    assert any(torch.equal(x, batch["goal"]) for x in shifted)
    moved = changed(before["inputs"], agent.inputs)
    assert any(n.startswith("state_encoder.convs") for n in moved)
    assert any(n.startswith("goal_encoder.convs") for n in moved)
    if module is not gcbc:  # a whole update's actor step sends no gradient into the encoders
        agent.critic_opt.zero_grad(set_to_none=True)
        monkeypatch.setattr(agent, "update_critic", lambda *args: {})
        agent.update(pixel_batch(seed=1), step=2)
        assert all(p.grad is None for p in agent.inputs.parameters())
    obs = {"observation": batch["observation"].numpy(), "desired_goal": batch["goal"].numpy()}
    assert agent.act(obs, explore=False).shape == (4, 2)


def test_short_online_run_with_image_goals(tmp_path):
    run, config = train.build_configs("gcrl", "cpu-smoke", {
        "env": "maze-pixels:PointMaze_UMaze-v3", "image_size": 32, "frames": 300, "seed_frames": 200,
        "eval_every_frames": 300, "eval_episodes": 1, "hidden_dims": (16,), "batch_size": 8, "feature_dim": 8})
    result = train.train("gcrl", run, config, tmp_path)
    assert "success" in result
    assert "critic_loss" in (tmp_path / "train.csv").read_text().splitlines()[0]


def test_evaluation_reports_success_and_final_distance_on_fixed_goals():
    env = PointGoal()
    agent = gcbc.Agent(env.observation_space, env.action_space, gcbc.Config(hidden_dims=(8,)))
    first = train.evaluate(agent, env, episodes=4, seed=7)
    again = train.evaluate(agent, env, episodes=4, seed=7)
    assert first == again  # the same seeded goals and starts, a deterministic policy
    assert {"success", "final_success", "final_distance"} <= set(first)
    assert 0 <= first["final_distance"] <= 2 * np.sqrt(2)
