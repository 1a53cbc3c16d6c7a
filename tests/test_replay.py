"""Tests of crl.replay against a naive store that keeps full stacked obs per transition."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
import torch
from scipy import stats

from crl.replay import EpisodeReplay, truncated_geometric

# --------------------------------------------------------------------------------------------
# a fake environment that stacks frames like the DMC / Atari wrappers, and a naive reference


class FakeStream:
    """One env copy: random frames, stacked along axis 0, newest last; reset repeats frame 0."""

    def __init__(self, rng, frame_shape, stack, dtype=np.uint8, action_dim=2, goal=False):
        self.rng, self.frame_shape, self.stack, self.dtype = rng, frame_shape, stack, dtype
        self.action_dim, self.goal = action_dim, goal
        self.frames: deque = deque(maxlen=stack)
        self.serial = -1
        self.t = 0

    def _frame(self):
        if self.dtype == np.uint8:
            return self.rng.integers(0, 256, self.frame_shape, dtype=np.uint8)
        return self.rng.normal(size=self.frame_shape).astype(self.dtype)

    def _obs(self):
        obs = np.concatenate(list(self.frames), axis=0)
        if not self.goal:
            return obs
        # achieved_goal encodes (episode serial, position) so that goals can be traced back
        return {"observation": obs, "achieved_goal": np.array([self.serial, self.t], np.float32),
                "desired_goal": np.array([-1.0, -1.0], np.float32)}

    def reset(self, serial):
        self.serial, self.t = serial, 0
        first = self._frame()
        self.frames.extend([first] * self.stack)
        return self._obs()

    def step(self):
        self.frames.append(self._frame())
        self.t += 1
        action = self.rng.normal(size=self.action_dim).astype(np.float32)
        reward = float(self.rng.normal())
        return action, reward, self._obs()


class NaiveStore:
    """Full stacked obs and next obs per transition, keyed by episode serial (no eviction)."""

    def __init__(self):
        self.episodes: dict[int, dict] = {}
        self.next_serial = 0

    def new_episode(self, obs, stream):
        serial = self.next_serial
        self.next_serial += 1
        self.episodes[serial] = {"obs": [obs], "action": [], "reward": [], "terminated": [],
                                 "truncated": [], "stream": stream}
        return serial

    def add(self, serial, action, reward, next_obs, terminated, truncated):
        ep = self.episodes[serial]
        ep["obs"].append(next_obs)
        ep["action"].append(action)
        ep["reward"].append(reward)
        ep["terminated"].append(terminated)
        ep["truncated"].append(truncated)

    def field(self, serial, pos, name=None):
        obs = self.episodes[serial]["obs"][pos]
        return obs if name is None else obs[name]

    def nstep(self, serial, t, n, gamma):
        ep = self.episodes[serial]
        T = len(ep["action"])
        ret, m, term = 0.0, 0, False
        while m < n and t + m < T:
            ret += gamma**m * ep["reward"][t + m]
            term = term or ep["terminated"][t + m]
            m += 1
        return ret, (0.0 if term else gamma**m), t + m


def drive(replay, ref, streams, n_steps, rng, p_end=0.1, p_term=0.5, max_len=None, check=None):
    """Interleave steps of several streams in random order, ending episodes at random."""
    current = {}
    for s, env in enumerate(streams):
        serial = ref.next_serial
        obs = env.reset(serial)
        replay.add_first(obs, stream=s)
        current[s] = ref.new_episode(obs, s)
    for _ in range(n_steps):
        s = int(rng.integers(len(streams)))
        env = streams[s]
        action, reward, obs = env.step()
        end = rng.random() < p_end or (max_len is not None and env.t >= max_len)
        term = bool(end and rng.random() < p_term)
        trunc = bool(end and not term)
        replay.add(action, reward, obs, term, trunc, stream=s)
        ref.add(current[s], action, reward, obs, term, trunc)
        if check is not None:
            check()
        if end:
            serial = ref.next_serial
            obs = env.reset(serial)
            replay.add_first(obs, stream=s)
            current[s] = ref.new_episode(obs, s)
    return current


def live_pairs(replay):
    """All (serial, step) pairs of stored transitions."""
    serials = np.repeat(replay.episode_ids, replay.episode_lengths)
    steps = np.concatenate([np.arange(n) for n in replay.episode_lengths])
    return serials, steps


# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("frame_shape,stack,dtype", [
    ((3, 4, 4), 3, np.uint8),    # DMC pixels
    ((1, 5, 5), 4, np.uint8),    # Atari grayscale
    ((5,), 1, np.float32),       # state vectors
])
def test_stacks_match_naive_reference(frame_shape, stack, dtype):
    rng = np.random.default_rng(1)
    replay = EpisodeReplay(capacity=60, frame_stack=stack, seed=2)
    ref = NaiveStore()
    env = FakeStream(rng, frame_shape, stack, dtype)
    drive(replay, ref, [env], n_steps=400, rng=rng, p_end=0.12, max_len=14)
    assert ref.next_serial > 20 and replay.episode_ids[0] > 5  # eviction and wraparound happened

    serials, steps = live_pairs(replay)
    batch = replay.transitions_at(serials, steps, n_step=1)
    for b, (e, t) in enumerate(zip(serials, steps)):
        ep = ref.episodes[e]
        np.testing.assert_array_equal(batch["obs"][b], ep["obs"][t])
        np.testing.assert_array_equal(batch["next_obs"][b], ep["obs"][t + 1])
        np.testing.assert_array_equal(batch["action"][b], ep["action"][t])
        assert batch["reward"][b] == np.float32(ep["reward"][t])
    assert batch["obs"].dtype == dtype

    # episode starts repeat the first frame
    starts = steps == 0
    assert starts.any()
    first = batch["obs"][starts]
    c = frame_shape[0]
    for i in range(stack):
        np.testing.assert_array_equal(first[:, i * c:(i + 1) * c], first[:, -c:])

    sample = replay.sample_transitions(128, return_index=True)
    for b in range(128):
        e, t = int(sample["episode"][b]), int(sample["step"][b])
        np.testing.assert_array_equal(sample["obs"][b].numpy(), ref.episodes[e]["obs"][t])
        np.testing.assert_array_equal(sample["next_obs"][b].numpy(), ref.episodes[e]["obs"][t + 1])


def _scalar_episode(replay, serial, rewards, terminated):
    """State obs [serial, position] so that next_obs identifies its position."""
    replay.add_first(np.array([serial, 0], np.float32))
    for t, r in enumerate(rewards):
        last = t == len(rewards) - 1
        replay.add(np.zeros(1, np.float32), r, np.array([serial, t + 1], np.float32),
                   terminated=last and terminated, truncated=last and not terminated)


def test_nstep_returns_by_hand():
    replay = EpisodeReplay(capacity=100)
    _scalar_episode(replay, 0, [1.0, 2.0, 3.0, 4.0, 5.0], terminated=True)
    _scalar_episode(replay, 1, [1.0, 1.0, 1.0, 1.0], terminated=False)
    g = 0.5
    cases = [  # (episode, t, reward, discount, next position, steps)
        (0, 0, 1 + g * 2 + g**2 * 3, g**3, 3, 3),
        (0, 1, 2 + g * 3 + g**2 * 4, g**3, 4, 3),
        (0, 2, 3 + g * 4 + g**2 * 5, 0.0, 5, 3),   # termination inside the window
        (0, 3, 4 + g * 5, 0.0, 5, 2),
        (0, 4, 5.0, 0.0, 5, 1),
        (1, 1, 1 + g + g**2, g**3, 4, 3),
        (1, 2, 1 + g, g**2, 4, 2),                 # truncation: bootstrap from the final obs
        (1, 3, 1.0, g, 4, 1),
    ]
    episodes, steps = [c[0] for c in cases], [c[1] for c in cases]
    batch = replay.transitions_at(episodes, steps, n_step=3, gamma=g)
    for b, (e, t, ret, disc, nxt, m) in enumerate(cases):
        assert batch["reward"][b] == pytest.approx(ret)
        assert batch["discount"][b] == pytest.approx(disc)
        np.testing.assert_array_equal(batch["next_obs"][b], [e, nxt])
        np.testing.assert_array_equal(batch["obs"][b], [e, t])
        assert batch["steps"][b] == m
        assert batch["terminated"][b] == (1.0 if disc == 0 else 0.0)
    # sampled batches agree with the same formula
    sample = replay.sample_transitions(256, n_step=3, gamma=g, return_index=True)
    ref = replay.transitions_at(sample["episode"].numpy(), sample["step"].numpy(), n_step=3, gamma=g)
    for key in ("reward", "discount", "next_obs"):
        np.testing.assert_array_equal(sample[key].numpy(), ref[key])


def test_unfinished_window_not_sampled_until_complete():
    replay = EpisodeReplay(capacity=100, seed=0)
    replay.add_first(np.zeros(2, np.float32))
    for t in range(6):
        replay.add(np.zeros(1, np.float32), 1.0, np.full(2, t + 1, np.float32), False, False)
    steps = replay.sample_transitions(2000, n_step=3, return_index=True)["step"].numpy()
    assert set(steps.tolist()) == {0, 1, 2, 3}  # t + 3 <= 6
    assert set(replay.sample_transitions(500, n_step=1, return_index=True)["step"].tolist()) == set(range(6))
    seq = replay.sample_sequences(500, 4, return_index=True)
    assert set(seq["step"].tolist()) == {0, 1, 2} and seq["mask"].min() == 1
    with pytest.raises(ValueError):
        replay.sample_goals(8)  # goals come from finished episodes by default
    assert replay.sample_goals(8, include_unfinished=True)["goal_offset"].min() >= 1
    replay.add(np.zeros(1, np.float32), 1.0, np.full(2, 7, np.float32), True, False)
    steps = replay.sample_transitions(2000, n_step=3, return_index=True)["step"].numpy()
    assert set(steps.tolist()) == set(range(7))


def _goal_replay(lengths, gamma_seed=0):
    replay = EpisodeReplay(capacity=1000, seed=gamma_seed)
    for serial, T in enumerate(lengths):
        obs = np.stack([np.full(T + 1, serial), np.arange(T + 1), np.zeros(T + 1)], 1).astype(np.float32)
        replay.add_episode({"observation": obs, "achieved_goal": obs[:, :2]},
                           actions=np.zeros((T, 1), np.float32), rewards=np.zeros(T),
                           terminated=np.arange(T) == T - 1)
    return replay


def test_goal_offsets_follow_truncated_geometric():
    lengths, gamma = [10, 25, 40], 0.8
    replay = _goal_replay(lengths)
    offsets, obs, goals = [], [], []
    for _ in range(40):
        b = replay.sample_goals(5000, gamma)
        offsets.append(b["goal_offset"].numpy())
        obs.append(b["observation"].numpy())
        goals.append(b["goal"].numpy())
    offsets, obs, goals = map(np.concatenate, (offsets, obs, goals))
    # same episode, later observation, offset consistent, j <= T
    assert np.all(goals[:, 0] == obs[:, 0])
    assert np.all(goals[:, 1] - obs[:, 1] == offsets) and offsets.min() >= 1
    T = np.array(lengths)[obs[:, 0].astype(int)]
    assert np.all(goals[:, 1] <= T)
    # expected marginal of the offset: i uniform over all steps, d | i truncated geometric
    d_max = max(lengths)
    expected = np.zeros(d_max + 1)
    for L in lengths:
        for i in range(L):
            d = np.arange(1, L - i + 1)
            p = gamma**d / np.sum(gamma**d)
            expected[d] += p / sum(lengths)
    counts = np.bincount(offsets, minlength=d_max + 1)
    exp = expected * len(offsets)
    # merge the tail into one bin where expected counts are small
    cut = int(np.argmax(exp[1:] < 20)) + 1
    f_obs = np.append(counts[1:cut], counts[cut:].sum())
    f_exp = np.append(exp[1:cut], exp[cut:].sum())
    assert stats.chisquare(f_obs, f_exp).pvalue > 1e-3
    # conditional on a step near the end: d in {1, 2, 3} with weights g, g^2, g^3
    near_end = (obs[:, 0] == 1) & (obs[:, 1] == 22)
    got = np.bincount(offsets[near_end], minlength=4)[1:]
    w = gamma ** np.arange(1, 4)
    assert stats.chisquare(got, w / w.sum() * got.sum()).pvalue > 1e-3
    # an off-by-one convention (goal j in i..T-1) would be rejected by the same test
    shifted = np.bincount(offsets - 1, minlength=d_max + 1)
    f_shift = np.append(shifted[1:cut], shifted[cut:].sum())
    assert stats.chisquare(f_shift, f_exp * f_shift.sum() / f_exp.sum()).pvalue < 1e-6


def test_truncated_geometric_edges():
    rng = np.random.default_rng(0)
    D = np.array([1, 1, 5, 5, 3])
    assert np.all(truncated_geometric(rng, 0.0, D) == 1)
    d = truncated_geometric(rng, 1.0, np.full(60000, 4))
    assert stats.chisquare(np.bincount(d)[1:]).pvalue > 1e-3
    d = truncated_geometric(rng, 0.999999, D)
    assert np.all((d >= 1) & (d <= D))


def test_random_goals():
    lengths = [10, 25, 40]
    replay = _goal_replay(lengths)
    b = replay.sample_goals(20000, 0.9, random_goal_prob=0.3)
    is_rand = (b["goal_offset"] == -1).numpy()
    assert abs(is_rand.mean() - 0.3) < 4 * np.sqrt(0.3 * 0.7 / 20000)
    goals = b["goal"].numpy()[is_rand]
    serial, pos = goals[:, 0].astype(int), goals[:, 1].astype(int)
    assert np.all(pos <= np.array(lengths)[serial])
    # uniform over stored observations: episodes in proportion to their T + 1 frames
    frames = np.array(lengths) + 1
    assert stats.chisquare(np.bincount(serial, minlength=3), frames / frames.sum() * len(serial)).pvalue > 1e-3


def test_eviction_whole_episodes_oldest_first():
    rng = np.random.default_rng(3)
    capacity = 40
    replay = EpisodeReplay(capacity=capacity, frame_stack=3, seed=0)
    ref = NaiveStore()
    env = FakeStream(rng, (3, 2, 2), 3)

    def check():
        assert replay.num_frames <= capacity
        ids = replay.episode_ids
        # live episodes: the newest ones, a contiguous run of serials ending at the open one
        assert ids[-1] == ref.next_serial - 1
        np.testing.assert_array_equal(ids, np.arange(ids[0], ids[-1] + 1))
        # whole episodes: every finished live episode is complete
        for e, n in zip(ids, replay.episode_lengths):
            assert n == len(ref.episodes[e]["action"])
        # and only as much was evicted as needed: the next older episode would not have fit
        if ids[0] > 0:
            older = len(ref.episodes[ids[0] - 1]["action"]) + 1
            assert replay.num_frames + older > capacity

    drive(replay, ref, [env], n_steps=300, rng=rng, p_end=0.15, max_len=12, check=check)
    assert replay.episode_ids[0] > 10
    assert len(replay) == replay.num_frames - replay.num_episodes
    # an episode longer than the capacity is an error, not a silent partial eviction
    replay.add_first(env.reset(ref.next_serial))
    with pytest.raises(ValueError, match="too long"):
        for _ in range(capacity):
            replay.add(np.zeros(2, np.float32), 0.0, env.step()[2], False, False)
    with pytest.raises(ValueError):
        replay_long = EpisodeReplay(capacity=10)
        replay_long.add_episode(np.zeros((11, 2)), np.zeros((10, 1)), np.zeros(10))


def test_streams_evict_independently():
    rng = np.random.default_rng(4)
    replay = EpisodeReplay(capacity=60, num_streams=2, seed=0)
    ref = NaiveStore()
    envs = [FakeStream(rng, (3,), 1, np.float32) for _ in range(2)]
    drive(replay, ref, envs, n_steps=300, rng=rng, p_end=0.1, max_len=10)
    streams = np.array([ref.episodes[e]["stream"] for e in replay.episode_ids])
    for s in range(2):
        mine = [e for e, ep in ref.episodes.items() if ep["stream"] == s]
        live = replay.episode_ids[streams == s]
        # per stream: the newest episodes, oldest evicted first, within the stream's 30 frames
        np.testing.assert_array_equal(live, mine[len(mine) - len(live):])
        assert sum(len(ref.episodes[e]["obs"]) for e in live) <= 30


def test_multiple_streams_interleaved():
    rng = np.random.default_rng(5)
    replay = EpisodeReplay(capacity=600, frame_stack=3, num_streams=3, seed=0)
    ref = NaiveStore()
    envs = [FakeStream(rng, (3, 3, 3), 3) for _ in range(3)]
    current = drive(replay, ref, envs, n_steps=450, rng=rng, p_end=0.08, max_len=25)
    assert set(current.values()) <= set(replay.episode_ids.tolist())
    for e in replay.episode_ids:
        ep, got = ref.episodes[e], replay.get_episode(e, stacked=True)
        np.testing.assert_array_equal(got["obs"], np.stack(ep["obs"]))
        np.testing.assert_array_equal(got["action"], np.array(ep["action"]).reshape(-1, 2))
        np.testing.assert_array_equal(got["reward"], np.array(ep["reward"], np.float32))
        np.testing.assert_array_equal(got["terminated"], np.array(ep["terminated"], bool))
        np.testing.assert_array_equal(got["truncated"], np.array(ep["truncated"], bool))
        assert bool(got["done"]) == (e not in current.values())
    serials, steps = live_pairs(replay)
    batch = replay.transitions_at(serials, steps, n_step=3, gamma=0.9)
    for b, (e, t) in enumerate(zip(serials, steps)):
        ret, disc, nxt = ref.nstep(e, t, 3, 0.9)
        assert batch["reward"][b] == pytest.approx(ret, rel=1e-5, abs=1e-5)
        assert batch["discount"][b] == pytest.approx(disc)
        np.testing.assert_array_equal(batch["next_obs"][b], ref.episodes[e]["obs"][nxt])
        np.testing.assert_array_equal(batch["obs"][b], ref.episodes[e]["obs"][t])


def test_sequences_match_reference():
    rng = np.random.default_rng(6)
    replay = EpisodeReplay(capacity=400, frame_stack=3, num_streams=2, seed=1)
    ref = NaiveStore()
    envs = [FakeStream(rng, (3, 2, 2), 3) for _ in range(2)]
    drive(replay, ref, envs, n_steps=250, rng=rng, p_end=0.1, max_len=20)
    L = 6
    for pad in (True, False):
        b = {k: v.numpy() for k, v in replay.sample_sequences(300, L, pad=pad, return_index=True).items()}
        assert b["obs"].shape == (300, L + 1, 9, 2, 2) and b["action"].shape == (300, L, 2)
        for i in range(300):
            ep, t = ref.episodes[int(b["episode"][i])], int(b["step"][i])
            T = len(ep["action"])
            m = min(L, T - t)
            if not pad:
                assert m == L
            np.testing.assert_array_equal(b["mask"][i], np.arange(L) < m)
            np.testing.assert_array_equal(b["obs_mask"][i], np.arange(L + 1) <= m)
            np.testing.assert_array_equal(b["obs"][i, : m + 1], np.stack(ep["obs"][t: t + m + 1]))
            np.testing.assert_array_equal(b["action"][i, :m], np.stack(ep["action"][t: t + m]))
            np.testing.assert_array_equal(b["reward"][i, :m], np.array(ep["reward"][t: t + m], np.float32))
            np.testing.assert_array_equal(b["terminated"][i, :m], ep["terminated"][t: t + m])
            assert np.all(b["action"][i, m:] == 0) and np.all(b["reward"][i, m:] == 0)
            assert np.all(b["terminated"][i, m:] == 0)
            assert b["is_first"][i, 0] == (t == 0) and b["is_first"][i, 1:].sum() == 0
        if pad:
            assert (b["mask"] == 0).any()  # windows past an episode end were drawn
    single = replay.sample_sequences(50, L, stacked=False, return_index=True)
    assert single["obs"].shape == (50, L + 1, 3, 2, 2)
    e, t = int(single["episode"][0]), int(single["step"][0])
    np.testing.assert_array_equal(single["obs"][0, 0].numpy(), ref.episodes[e]["obs"][t][-3:])


def _pixel_goal_replay(seed=7):
    rng = np.random.default_rng(seed)
    replay = EpisodeReplay(capacity=120, frame_stack={"observation": 3}, num_streams=2, seed=3)
    ref = NaiveStore()
    envs = [FakeStream(rng, (3, 4, 4), 3, goal=True) for _ in range(2)]
    drive(replay, ref, envs, n_steps=200, rng=rng, p_end=0.1, max_len=15)
    return replay, ref, envs, rng


def _samples(replay):
    out = {}
    for kind, kwargs in [("transitions", dict(n_step=3, gamma=0.9)), ("sequences", dict(length=4)),
                         ("goals", dict(gamma=0.9, random_goal_prob=0.2))]:
        out.update({f"{kind}/{k}": v for k, v in replay.sample(64, kind, return_index=True, **kwargs).items()})
    return out


def test_state_dict_round_trip(tmp_path):
    replay, ref, envs, rng = _pixel_goal_replay()
    assert replay.episode_ids[0] > 0  # something was evicted
    action, reward, obs = envs[0].step()
    replay.add(action, reward, obs, False, False, stream=0)  # stream 0 is mid-episode
    sd = replay.state_dict()
    assert all(isinstance(v, np.ndarray) and v.dtype != object for v in sd.values())
    np.savez(tmp_path / "replay.npz", **sd)
    with np.load(tmp_path / "replay.npz", allow_pickle=False) as f:
        loaded = {k: f[k] for k in f.files}
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    safetensors_numpy.save_file(sd, str(tmp_path / "replay.safetensors"))
    loaded_st = safetensors_numpy.load_file(str(tmp_path / "replay.safetensors"))
    assert set(loaded_st) == set(sd)

    for restored in (EpisodeReplay.from_state_dict(loaded), EpisodeReplay(capacity=2)):
        if restored.capacity == 2:
            restored.load_state_dict(loaded_st)
        assert (len(restored), restored.num_frames, restored.num_episodes) == \
               (len(replay), replay.num_frames, replay.num_episodes)
        a, b = _samples(replay), _samples(restored)
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
        # the open episodes continue: same steps into both give the same data
        steps = [envs[s].step() + (s,) for s in (0, 1, 1, 0, 1)]
        for target in (replay, restored):
            for action, reward, obs, s in steps:
                target.add(action, reward, obs, False, False, stream=s)
            target.rng = np.random.default_rng(11)
        a, b = _samples(replay), _samples(restored)
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
        sa, sb = replay.state_dict(), restored.state_dict()
        assert set(sa) == set(sb)
        for k in sa:
            np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)
        replay.load_state_dict(loaded)  # back to the saved state for the next restored copy


def test_dict_obs_goal_sampler_on_pixels():
    replay, ref, envs, rng = _pixel_goal_replay()
    assert replay.obs_fields == {"observation": 3, "achieved_goal": 1, "desired_goal": 1}
    b = replay.sample_goals(256, 0.9, return_index=True, goal_field="observation")
    g = replay.sample_goals(256, 0.9, return_index=True)
    assert b["goal"].shape == (256, 9, 4, 4) and b["goal"].dtype == torch.uint8
    for i in range(256):
        e, t, d = int(b["episode"][i]), int(b["step"][i]), int(b["goal_offset"][i])
        np.testing.assert_array_equal(b["observation"][i].numpy(), ref.episodes[e]["obs"][t]["observation"])
        np.testing.assert_array_equal(b["next_observation"][i].numpy(),
                                      ref.episodes[e]["obs"][t + 1]["observation"])
        np.testing.assert_array_equal(b["goal"][i].numpy(), ref.episodes[e]["obs"][t + d]["observation"])
        assert ref.episodes[e]["truncated"][-1] or ref.episodes[e]["terminated"][-1]  # finished only
        e, t, d = int(g["episode"][i]), int(g["step"][i]), int(g["goal_offset"][i])
        np.testing.assert_array_equal(g["goal"][i].numpy(), [e, t + d])


def test_add_episode_matches_incremental_adds():
    rng = np.random.default_rng(8)
    online = EpisodeReplay(capacity=200, frame_stack=3, seed=0)
    ref = NaiveStore()
    env = FakeStream(rng, (3, 2, 2), 3)
    drive(online, ref, [env], n_steps=60, rng=rng, p_end=0.1, max_len=12)
    finished = [e for e in online.episode_ids if bool(online.get_episode(e)["done"])]
    from_stacked = EpisodeReplay(capacity=200, frame_stack=3, seed=0)
    from_frames = EpisodeReplay(capacity=200, frame_stack=3, seed=0)
    for e in finished:
        ep = ref.episodes[e]
        obs = np.stack(ep["obs"])
        common = dict(actions=np.stack(ep["action"]), rewards=ep["reward"],
                      terminated=ep["terminated"], truncated=ep["truncated"])
        from_stacked.add_episode(obs, stacked=True, **common)
        from_frames.add_episode(obs[:, -3:], **common)
    for loaded in (from_stacked, from_frames):
        assert loaded.num_episodes == len(finished)
        for new_id, e in enumerate(finished):
            got, want = loaded.get_episode(new_id, stacked=True), online.get_episode(e, stacked=True)
            for k in want:
                np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    # an episode that ends on neither flag is loaded as truncated; flags mid-episode are errors
    serial = from_frames.add_episode(np.zeros((4, 3, 2, 2), np.uint8), np.zeros((3, 2)), np.ones(3))
    assert from_frames.get_episode(serial)["truncated"].tolist() == [False, False, True]
    with pytest.raises(ValueError, match="before the last step"):
        from_frames.add_episode(np.zeros((4, 3, 2, 2), np.uint8), np.zeros((3, 2)), np.ones(3),
                                terminated=[True, False, False])
    with pytest.raises(ValueError, match="T\\+1"):
        from_frames.add_episode(np.zeros((3, 3, 2, 2), np.uint8), np.zeros((3, 2)), np.ones(3))


def test_reset_handling_and_extras():
    replay = EpisodeReplay(capacity=50)
    with pytest.raises(RuntimeError):
        replay.add(0, 0.0, np.zeros(2), False, False)
    replay.add_first(np.zeros(2))
    replay.add_first(np.ones(2))  # reset without a step replaces the lone first frame
    assert (replay.num_episodes, replay.num_frames) == (1, 1)
    for t in range(3):
        replay.add(t, float(t), np.full(2, t + 2.0), False, False, extras={"log_prob": np.float32(-t)})
    replay.add_first(np.zeros(2))  # reset mid-episode: the open episode is closed as truncated
    ep = replay.get_episode(0)
    assert ep["truncated"].tolist() == [False, False, True] and bool(ep["done"])
    np.testing.assert_array_equal(ep["obs"][0], [1, 1])
    assert ep["obs"].dtype == np.float32 and ep["action"].dtype == np.int64  # float64 stored as float32
    b = replay.sample_transitions(16)
    assert b["action"].dtype == torch.int64 and b["log_prob"].shape == (16,)
    with pytest.raises(ValueError, match="extras"):
        replay.add(0, 0.0, np.zeros(2), False, False)
    with pytest.raises(ValueError, match="shape"):
        replay.add(0, 0.0, np.zeros(3), False, False, extras={"log_prob": 0.0})


def test_torch_batches_types_and_device():
    rng = np.random.default_rng(9)
    replay = EpisodeReplay(capacity=300, frame_stack=3, seed=0)
    drive(replay, NaiveStore(), [FakeStream(rng, (3, 8, 8), 3)], n_steps=100, rng=rng, max_len=30)
    b = replay.sample_transitions(32, n_step=2, device="cpu")
    assert b["obs"].dtype == torch.uint8 and b["obs"].shape == (32, 9, 8, 8)
    assert b["next_obs"].dtype == torch.uint8
    assert b["reward"].dtype == torch.float32 and b["discount"].dtype == torch.float32
    assert all(v.is_contiguous() for v in b.values())
    with pytest.raises(ValueError, match="unknown batch kind"):
        replay.sample(4, "trajectories")


def test_memory_layout_one_frame_per_step():
    replay = EpisodeReplay(capacity=1002, frame_stack=3)
    frame_bytes = 3 * 84 * 84
    assert replay.nbytes < 1000  # nothing allocated before the first observation
    replay.add_first(np.zeros((9, 84, 84), np.uint8))
    replay.add(np.zeros(6, np.float32), 0.0, np.zeros((9, 84, 84), np.uint8), False, False)
    assert replay._frames["obs"].shape == (1002, 3, 84, 84)
    per_transition = replay.nbytes / 1000  # if full with two 500-step episodes
    assert per_transition <= 1.05 * frame_bytes + 64


@pytest.mark.parametrize("frame_stack", [3, {"pixels": 3, "state": 1}])
def test_an_empty_replay_keeps_its_frame_stack_through_state_dict(frame_stack):
    replay = EpisodeReplay.from_state_dict(EpisodeReplay(30, frame_stack=frame_stack).state_dict())
    stacked = np.zeros((9, 2, 2), np.uint8)
    obs = stacked if isinstance(frame_stack, int) else {"pixels": stacked, "state": np.zeros(2, np.float32)}
    replay.add_first(obs)
    assert replay.obs_fields["pixels" if isinstance(frame_stack, dict) else "obs"] == 3


# ---- frames kept on the training device (a GPU; here the CPU stands in for it) ------------------

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _twin_replays(device, capacity=120, streams=2, seed=3):
    """Two replays fed the same steps (with evictions), one also holding its frames on `device`."""
    plain = EpisodeReplay(capacity=capacity, frame_stack=3, num_streams=streams, seed=0)
    mirrored = EpisodeReplay(capacity=capacity, frame_stack=3, num_streams=streams, seed=0)
    mirrored.keep_frames_on(device)
    for replay in (plain, mirrored):
        rng = np.random.default_rng(seed)
        envs = [FakeStream(rng, (3, 4, 4), 3) for _ in range(streams)]
        drive(replay, NaiveStore(), envs, n_steps=300, rng=rng, max_len=25)
    return plain, mirrored


@pytest.mark.parametrize("device", DEVICES)
def test_frames_on_device_give_the_host_batches(device):
    plain, mirrored = _twin_replays(device)
    assert mirrored.frames_on_device is not None and mirrored.frames_on_device.type == device
    assert plain.num_frames < 300  # episodes were evicted, so ring slots were overwritten
    for n_step in (1, 3):
        want = plain.sample_transitions(64, n_step=n_step, device=device)
        got = mirrored.sample_transitions(64, n_step=n_step, device=device)
        assert want.keys() == got.keys()
        for key in want:
            assert got[key].device == want[key].device and got[key].dtype == want[key].dtype, key
            torch.testing.assert_close(got[key], want[key], rtol=0, atol=0, msg=key)
    # batches for another device (here: kept on the host) are gathered on the host as before
    gather = mirrored._obs_at

    def no_device_gather(name, rows, pos, stacked=True, on_device=False):
        assert not on_device, "gathered on the device"
        return gather(name, rows, pos, stacked, on_device)

    mirrored._obs_at = no_device_gather
    np.testing.assert_array_equal(mirrored.sample_transitions(8)["obs"].numpy(),
                                  plain.sample_transitions(8)["obs"].numpy())


def _more_steps(replay, seed):
    """The same steps for every replay given the same seed: new episodes on both streams (stream
    0's lone first frame replaced by a second reset), then steps on both."""
    rng = np.random.default_rng(seed)
    frame = lambda: rng.integers(0, 256, (9, 4, 4), dtype=np.uint8)
    replay.add_first(frame(), stream=0)
    replay.add_first(frame(), stream=0)
    replay.add_first(frame(), stream=1)
    for t in range(30):
        replay.add(rng.normal(size=2).astype(np.float32), float(t), frame(), False, t % 11 == 10, stream=t % 2)
        if t % 11 == 10:
            replay.add_first(frame(), stream=t % 2)


@pytest.mark.parametrize("device", DEVICES)
def test_frames_on_device_follow_loads_and_whole_episodes(device):
    plain, mirrored = _twin_replays(device)
    state = plain.state_dict()
    restored = EpisodeReplay(capacity=10, frame_stack=1)
    restored.keep_frames_on(device)  # asked for before the load: the load fills the device copy
    restored.load_state_dict(state)
    late = EpisodeReplay.from_state_dict(state)
    late.keep_frames_on(device)  # asked for after the data arrived: copied then
    loaded = EpisodeReplay(capacity=120, frame_stack=3, num_streams=2, seed=0)
    loaded.keep_frames_on(device)  # whole episodes (datasets) go to the device copy too
    for serial in plain.episode_ids:
        ep = plain.get_episode(serial)
        if bool(ep["done"]):
            loaded.add_episode(ep["obs"], ep["action"], ep["reward"], ep["terminated"], ep["truncated"])
    for replay, twin in ((restored, EpisodeReplay.from_state_dict(state)),
                         (late, EpisodeReplay.from_state_dict(state)),
                         (loaded, EpisodeReplay.from_state_dict(loaded.state_dict()))):
        assert replay.frames_on_device is not None
        for r in (replay, twin):
            _more_steps(r, seed=5)  # writes after the load must reach the device copy
        want = twin.sample_transitions(64, n_step=3, device=device)
        got = replay.sample_transitions(64, n_step=3, device=device)
        for key in ("obs", "next_obs", "reward"):
            torch.testing.assert_close(got[key], want[key], rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("device", DEVICES)
def test_frames_on_device_dict_fields_of_any_stack_and_dtype(device):
    """Pixels (stack 3, uint8), a float64 state (stored float32, stack 1) and a scalar field, in
    batches of every kind."""
    replays = [EpisodeReplay(capacity=80, frame_stack={"pixels": 3}, seed=0) for _ in range(2)]
    replays[1].keep_frames_on(device)
    for replay in replays:
        rng = np.random.default_rng(4)
        obs = lambda t: {"pixels": rng.integers(0, 256, (6, 2, 2), dtype=np.uint8),
                         "state": rng.normal(size=3), "t": np.int64(t)}
        replay.add_first(obs(0))
        for t in range(1, 60):
            replay.add(np.zeros(1, np.float32), 1.0, obs(t), False, t % 13 == 0)
            if t % 13 == 0:
                replay.add_first(obs(0))
    fields = ("pixels", "state", "t")
    samplers = {  # every batch kind gathers its observations on the device
        "transitions": (lambda r: r.sample_transitions(32, n_step=2, device=device), fields),
        "sequences": (lambda r: r.sample_sequences(8, 5, device=device), fields),
        "unstacked sequences": (lambda r: r.sample_sequences(8, 5, stacked=False, device=device), fields),
        "goals": (lambda r: r.sample_goals(32, goal_field="pixels", random_goal_prob=0.5, device=device),
                  fields + ("goal",)),
    }
    gather = replays[1]._obs_at

    def no_host_gather(name, rows, pos, stacked=True, on_device=False):
        assert on_device, "gathered on the host"
        return gather(name, rows, pos, stacked, on_device)

    replays[1]._obs_at = no_host_gather
    for kind, (sample, names) in samplers.items():
        want, got = sample(replays[0]), sample(replays[1])
        for key in names + tuple("next_" + n for n in fields if "next_" + n in want):
            assert got[key].shape == want[key].shape and got[key].dtype == want[key].dtype, (kind, key)
            torch.testing.assert_close(got[key], want[key], rtol=0, atol=0, msg=f"{kind} {key}")


def test_frames_over_the_device_budget_stay_on_the_host():
    replay = EpisodeReplay(capacity=100, frame_stack=3, seed=0)
    replay.keep_frames_on("cpu", max_bytes=100 * 3 * 4 * 4 - 1)  # one byte short
    with pytest.warns(UserWarning, match="exceed"):
        drive(replay, NaiveStore(), [FakeStream(np.random.default_rng(0), (3, 4, 4), 3)], n_steps=20,
              rng=np.random.default_rng(0))
    assert replay.frames_on_device is None
    assert replay.sample_transitions(4, device="cpu")["obs"].shape == (4, 9, 4, 4)
    replay.keep_frames_on("cpu")  # no budget: copied
    assert replay.frames_on_device == torch.device("cpu")
    replay.keep_frames_on(None)  # dropped on request
    assert replay.frames_on_device is None
