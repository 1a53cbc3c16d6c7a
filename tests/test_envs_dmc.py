"""DMC wrapper against a hand-stepped raw dm_control environment."""

import numpy as np
import pytest
from dm_control import suite

from crl import envs
from crl.envs.dmc import DMCEnv, FAST_VISUAL_FLAGS


def raw_env(domain, task, seed):
    return suite.load(domain, task, task_kwargs={"random": seed})


def test_pixel_observations_shape_dtype_bounds():
    env = envs.make("dmc:cartpole-swingup", visuals="fast")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (9, 84, 84) and obs.dtype == np.uint8
    assert env.observation_space.contains(obs)
    assert obs.max() > obs.min()  # a real image, not a blank frame
    obs, *_ = env.step(env.action_space.sample())
    assert env.observation_space.contains(obs)
    assert env.action_space.low.min() == -1 and env.action_space.high.max() == 1

    small = envs.make("dmc:cartpole-swingup", height=48, width=64, frame_stack=1, visuals="fast")
    assert small.reset(seed=0)[0].shape == (3, 48, 64)


def test_standard_repeats_and_cameras():
    assert envs.make("dmc-state:cartpole-swingup").action_repeat == 8
    assert envs.make("dmc-state:cheetah-run").action_repeat == 4
    assert envs.make("dmc-state:walker-walk").action_repeat == 2
    assert envs.make("dmc-state:ball_in_cup-catch").action_repeat == 4
    assert envs.make("dmc-state:cheetah-run", action_repeat=2).action_repeat == 2
    assert envs.make("dmc-state:quadruped-walk").unwrapped.camera_id == 2
    assert envs.make("dmc-state:cheetah-run").unwrapped.camera_id == 0


@pytest.mark.parametrize("domain,task,repeat", [("cheetah", "run", 4), ("reacher", "easy", None)])
def test_action_repeat_matches_hand_stepped_raw_env(domain, task, repeat):
    seed = 7
    ours = DMCEnv(domain, task, pixels=True, visuals="fast", seed=seed, action_repeat=repeat)
    raw = raw_env(domain, task, seed)
    ours.reset()
    raw.reset()
    rng = np.random.default_rng(0)
    spec = raw.action_spec()
    for _ in range(6):
        action = rng.uniform(-1, 1, size=spec.shape)
        obs, reward, *_, info = ours.step(action)
        expected = 0.0
        for _ in range(ours.action_repeat):
            scaled = spec.minimum + (action + 1) / 2 * (spec.maximum - spec.minimum)
            expected += raw.step(scaled).reward
        assert reward == pytest.approx(expected, abs=1e-10)
        assert info["step_frames"] == ours.action_repeat
        np.testing.assert_array_equal(ours.physics.data.qpos, raw.physics.data.qpos)
        frame = raw.physics.render(84, 84, camera_id=0, render_flag_overrides=FAST_VISUAL_FLAGS)
        np.testing.assert_array_equal(obs, frame.transpose(2, 0, 1))
    assert info["frames"] == 6 * ours.action_repeat


def test_one_render_per_agent_step(monkeypatch):
    env = DMCEnv("cartpole", "balance", visuals="fast", seed=0)
    calls = []
    original = DMCEnv._render_hwc
    monkeypatch.setattr(DMCEnv, "_render_hwc", lambda self: calls.append(1) or original(self))
    env.reset()
    for _ in range(5):
        env.step(env.action_space.sample())
    assert env.action_repeat == 8
    assert len(calls) == 6  # reset + one per agent step, never per repeated physics step


@pytest.mark.parametrize("repeat,steps,last_frames", [(8, 125, 8), (3, 334, 1)])
def test_time_limit_is_truncation(repeat, steps, last_frames):
    env = envs.make("dmc-state:cartpole-balance", action_repeat=repeat)
    env.reset(seed=0)
    for step in range(1, steps + 1):
        _, _, terminated, truncated, info = env.step(np.zeros(1))
        assert not terminated
        assert truncated == (step == steps)
    assert info["step_frames"] == last_frames
    assert info["frames"] == 1000


def test_same_seed_same_observations():
    def rollout(seed):
        env = envs.make("dmc:walker-walk", visuals="fast")
        observations = [env.reset(seed=seed)[0]]
        actions = np.random.default_rng(1).uniform(-1, 1, size=(5, 6))
        observations += [env.step(a)[0] for a in actions]
        return np.stack(observations)

    first, again, other = rollout(3), rollout(3), rollout(4)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_reset_seed_reproducible_on_the_same_env():
    env = envs.make("dmc-state:cheetah-run")
    first = env.reset(seed=11)[0]
    env.step(env.action_space.sample())
    env.reset(seed=12)
    np.testing.assert_array_equal(env.reset(seed=11)[0], first)


def test_frame_stack_repeats_first_frame_and_shifts():
    env = envs.make("dmc:cartpole-swingup", visuals="fast")
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs[0:3], obs[3:6])
    np.testing.assert_array_equal(obs[3:6], obs[6:9])
    nxt, *_ = env.step(np.ones(1))
    np.testing.assert_array_equal(nxt[0:3], obs[6:9])
    np.testing.assert_array_equal(nxt[3:6], obs[6:9])
    assert not np.array_equal(nxt[6:9], obs[6:9])


def test_fast_visuals_differ_from_standard():
    fast = envs.make("dmc:cheetah-run", visuals="fast", frame_stack=1).reset(seed=0)[0]
    standard = envs.make("dmc:cheetah-run", frame_stack=1).reset(seed=0)[0]
    assert fast.shape == standard.shape
    assert not np.array_equal(fast, standard)
    with pytest.raises(ValueError, match="visuals"):
        envs.make("dmc:cheetah-run", visuals="pretty")


def test_vector_env_runs_episodes_and_reports_final_obs():
    vec = envs.make_vector("dmc:cartpole-balance", 2, visuals="fast")
    try:
        obs, info = vec.reset(seed=0)
        assert obs.shape == (2, 9, 84, 84)
        assert not np.array_equal(obs[0], obs[1])  # seeds 0 and 1
        for step in range(125):
            obs, reward, terminated, truncated, info = vec.step(vec.action_space.sample())
        assert truncated.all() and not terminated.any()
        assert info["final_obs"][0].shape == (9, 84, 84)
        np.testing.assert_array_equal(info["frames"], [1000, 1000])
    finally:
        vec.close()


def test_shadow_map_sized_by_image():
    from crl.envs.dmc import shadow_size_for

    assert shadow_size_for(84, 84) == 1024 and shadow_size_for(100, 100) == 1024
    assert shadow_size_for(200, 160) == 2048 and shadow_size_for(480, 640) == 8192
    assert DMCEnv("cartpole", "balance").physics.model.vis.quality.shadowsize == 1024
    # never more than the model asks for: the suite's 2048 for large renders
    assert DMCEnv("cartpole", "balance", height=480, width=640).physics.model.vis.quality.shadowsize == 2048
    assert DMCEnv("cartpole", "balance", shadow_size=2048).physics.model.vis.quality.shadowsize == 2048
    with pytest.raises(ValueError, match="shadow_size"):
        DMCEnv("cartpole", "balance", shadow_size=-1)


@pytest.mark.parametrize("domain,task", [("walker", "walk"), ("cartpole", "balance")])
def test_standard_renders_match_the_suites_own(domain, task):
    """The smaller shadow map changes a few shadow-edge pixels at most; with the suite's 2048 the
    frames are the raw environment's exactly."""
    seed = 3
    ours = DMCEnv(domain, task, seed=seed, action_repeat=1)
    suites_own = DMCEnv(domain, task, seed=seed, action_repeat=1, shadow_size=2048)
    raw = raw_env(domain, task, seed)
    ours.reset(), suites_own.reset(), raw.reset()
    rng = np.random.default_rng(0)
    spec = raw.action_spec()
    changed = []
    for _ in range(8):
        action = rng.uniform(-1, 1, size=spec.shape)
        obs = ours.step(action)[0].astype(int)
        exact = suites_own.step(action)[0]
        raw.step(spec.minimum + (action + 1) / 2 * (spec.maximum - spec.minimum))
        frame = raw.physics.render(84, 84, camera_id=0).transpose(2, 0, 1)
        np.testing.assert_array_equal(exact, frame)
        changed.append((np.abs(obs - frame).max(axis=0) > 0).mean())
    assert max(changed) < 0.003  # under 0.3% of the pixels (21 of 7056); a 256 map changes 0.4%


def test_unbounded_lqr_is_not_offered():
    assert not [i for i in envs.all_env_ids() if "lqr" in i]
    with pytest.raises(ValueError, match="unknown dmc-state environment 'lqr-lqr_2_1'"):
        envs.check_env_id("dmc-state:lqr-lqr_2_1")
    with pytest.raises(ValueError, match=r"lqr-lqr_2_1's actions are unbounded \(bounds -1e\+10..1e\+10\)"):
        DMCEnv("lqr", "lqr_2_1", pixels=False)
