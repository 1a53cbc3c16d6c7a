"""DeepMind Control suite tasks as gymnasium environments, from pixels or from states.

Follows the PlaNet/CURL/DrQ protocol: the task's standard action repeat (rewards summed over the
repeated steps), one render per agent step, 84x84 uint8 channels-first frames from camera 0
(camera 2 for quadruped), actions in [-1, 1] mapped to the task's bounds, and the suite's
1000-step time limit reported as truncation.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from crl.envs.rendering import ensure_rendering_backend, import_suite

# PlaNet benchmark action repeats (CURL, DrQ, SAC-AE); any other domain defaults to 2 (DrQ-v2).
ACTION_REPEAT = {"cartpole": 8, "finger": 2, "walker": 2, "cheetah": 4, "reacher": 4, "ball_in_cup": 4}
DEFAULT_ACTION_REPEAT = 2
# Fast visuals switch off these mjtRndFlag render flags. It changes the observations, so it is
# for smoke runs and tests only, never for reported numbers.
FAST_VISUAL_FLAGS = {"shadow": False, "reflection": False, "skybox": False}
VISUALS = ("standard", "fast")
# The suite's models ask for a 2048 x 2048 shadow map, drawn at every render. For small images
# `shadow_size=None` draws it at 8 texels per image pixel (a power of two, at least 1024, never more
# than the model's own): at 84 x 84 a step renders 1.12-1.63x faster on Mesa's software renderer,
# and 0.004-0.1% of the pixels differ from the 2048 render (0.2% in the worst frame; mean difference
# under 0.02 of 255 levels) on eight suite domains: BENCHMARKS.md, "Rendering: shadow map size".
# `shadow_size=2048` renders the suite's own frames exactly.
MIN_SHADOW_SIZE = 1024


def standard_action_repeat(domain: str) -> int:
    """The action repeat a `dmc:` task of `domain` runs at unless asked otherwise."""
    return ACTION_REPEAT.get(domain, DEFAULT_ACTION_REPEAT)


def shadow_size_for(height: int, width: int) -> int:
    """The shadow map's side for `height x width` renders: 8 texels per pixel, at least 1024."""
    return max(MIN_SHADOW_SIZE, 1 << (8 * max(height, width) - 1).bit_length())


# The LQR domain's actions are unbounded (its spec says +-1e10): the [-1, 1] -> bounds mapping that
# every other task gets would send 1e10 forces and blow the physics up.
UNBOUNDED_DOMAINS = ("lqr",)
MAX_ACTION_BOUND = 1e6


def all_tasks() -> list[tuple[str, str]]:
    return sorted(t for t in import_suite().ALL_TASKS if t[0] not in UNBOUNDED_DOMAINS)


def default_camera(domain: str) -> int:
    return 2 if domain == "quadruped" else 0


class DMCEnv(gym.Env):
    """One dm_control suite task. `pixels=True` gives uint8 (3, H, W) frames, else the state vector.

    `info["frames"]` counts simulator steps (action repeat included) since the env was made, so a
    training loop can count its budget in frames; `info["step_frames"]` is this step's share.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(
        self,
        domain: str,
        task: str,
        *,
        pixels: bool = True,
        height: int = 84,
        width: int = 84,
        camera_id: int | None = None,
        action_repeat: int | None = None,
        visuals: str = "standard",
        shadow_size: int | None = None,
        seed: int | None = None,
        render_mode: str | None = "rgb_array",
    ):
        if visuals not in VISUALS:
            raise ValueError(f"visuals must be one of {VISUALS}, got {visuals!r}")
        if pixels:
            ensure_rendering_backend()
        self.domain, self.task = domain, task
        self.pixels = pixels
        self.height, self.width = height, width
        self.camera_id = default_camera(domain) if camera_id is None else camera_id
        self.action_repeat = action_repeat or standard_action_repeat(domain)
        if self.action_repeat < 1:
            raise ValueError(f"action_repeat must be >= 1, got {self.action_repeat}")
        self.visuals = visuals
        self.render_mode = render_mode
        self._render_flags = FAST_VISUAL_FLAGS if visuals == "fast" else None
        if shadow_size is not None and shadow_size < 1:
            raise ValueError(f"shadow_size must be a positive number of texels, got {shadow_size}")
        self._env = import_suite().load(domain, task, task_kwargs={"random": seed})
        quality = self.physics.model.vis.quality  # read when the first render makes the GL context
        quality.shadowsize = shadow_size or min(quality.shadowsize, shadow_size_for(height, width))
        self._camera = None  # made on first render: keeps GL contexts out of forked parents
        self.frames = 0

        spec = self._env.action_spec()
        if np.max(np.abs([spec.minimum, spec.maximum])) > MAX_ACTION_BOUND:
            raise ValueError(f"{domain}-{task}'s actions are unbounded (bounds {spec.minimum.min():g}.."
                             f"{spec.maximum.max():g}): actions in [-1, 1] cannot be scaled onto them")
        self._action_low = spec.minimum.astype(np.float64)
        self._action_high = spec.maximum.astype(np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=spec.shape, dtype=np.float32)
        if pixels:
            self.observation_space = gym.spaces.Box(0, 255, (3, height, width), dtype=np.uint8)
        else:
            dim = sum(int(np.prod(s.shape)) for s in self._env.observation_spec().values())
            self.observation_space = gym.spaces.Box(-np.inf, np.inf, (dim,), dtype=np.float32)

    # -- gymnasium API ------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            # The task draws its initial state from this RandomState: reseeding it in place makes
            # `reset(seed=s)` reproducible without recompiling the model.
            self._env.task.random.seed(seed)
        time_step = self._env.reset()
        return self._observation(time_step), {"frames": self.frames, "step_frames": 0}

    def step(self, action):
        action = np.asarray(action, dtype=np.float64).reshape(self._action_low.shape)
        action = np.clip(action, -1.0, 1.0)
        scaled = self._action_low + (action + 1.0) * 0.5 * (self._action_high - self._action_low)
        reward, step_frames = 0.0, 0
        for _ in range(self.action_repeat):
            time_step = self._env.step(scaled)
            reward += time_step.reward or 0.0
            step_frames += 1
            if time_step.last():
                break
        self.frames += step_frames
        # dm_env marks the end of an episode with discount 0 for a true terminal state and
        # discount 1 when a time limit cut it: the latter is a truncation (bootstrap through it).
        terminated = time_step.last() and time_step.discount == 0.0
        truncated = time_step.last() and not terminated
        info = {"frames": self.frames, "step_frames": step_frames}
        return self._observation(time_step), float(reward), bool(terminated), bool(truncated), info

    def render(self):
        return self._render_hwc()

    def close(self):
        self._camera = None
        self._env.close()

    # -- internals ----------------------------------------------------------------------------

    @property
    def physics(self):
        return self._env.physics

    def _render_hwc(self) -> np.ndarray:
        if self._camera is None:
            from dm_control.mujoco import engine

            self._camera = engine.Camera(self.physics, self.height, self.width, self.camera_id)
        return self._camera.render(render_flag_overrides=self._render_flags)

    def _observation(self, time_step) -> np.ndarray:
        if self.pixels:
            return np.ascontiguousarray(self._render_hwc().transpose(2, 0, 1))
        parts = [np.asarray(v, dtype=np.float32).ravel() for v in time_step.observation.values()]
        return np.concatenate(parts)


def make_dmc(name: str, *, pixels: bool = True, **options: Any) -> DMCEnv:
    """`name` is `<domain>-<task>` (domains never contain '-': `ball_in_cup-catch`)."""
    domain, _, task = name.partition("-")
    return DMCEnv(domain, task, pixels=pixels, **options)
