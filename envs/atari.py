"""Atari 2600 games with the Atari-100k protocol (DER, SPR, DrQ-epsilon, CURL's Atari results).

ALE v5 with sticky actions off and the minimal action set; gymnasium's AtariPreprocessing for
frame skip 4 with max-pooling of the last two frames, 84x84 grayscale and up to 30 no-op starts;
episodes capped at 108k frames (27k agent steps). Rewards are the raw game score (agents clip
them for learning if their paper does). Terminal-on-life-loss is for training only: it ends the
agent's episode at a lost life but keeps playing the same game (Dopamine's behaviour, via
stable-baselines3's EpisodicLifeEnv), and `info["game_score"]` carries the full game's score when
the game is really over (the training log gets one row per game, crl.train.finished_episode).

Known differences from Dopamine's runner (small, measured by a review on 2026-12-03, not fixed):
EpisodicLifeEnv steps one NOOP (4 frames, not counted in `frames`) when it restarts the agent's
episode after a lost life, as OpenAI baselines does and Dopamine does not; ALE's 108k-frame cap
counts the no-op start frames (up to 7 agent steps fewer than Dopamine's 27k-step cap); and a step
truncated by the cap part-way through its frame skip returns the previous step's screen.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

# The 26 games of the Atari-100k benchmark (Kaiser et al. 2020), as ALE names.
ATARI_100K_GAMES = (
    "Alien", "Amidar", "Assault", "Asterix", "BankHeist", "BattleZone", "Boxing", "Breakout",
    "ChopperCommand", "CrazyClimber", "DemonAttack", "Freeway", "Frostbite", "Gopher", "Hero",
    "Jamesbond", "Kangaroo", "Krull", "KungFuMaster", "MsPacman", "Pong", "PrivateEye", "Qbert",
    "RoadRunner", "Seaquest", "UpNDown",
)
FRAME_SKIP = 4
MAX_EPISODE_FRAMES = 108_000


# Games whose minimal action set does not start with NOOP: the protocol's no-op starts (and
# gymnasium's AtariPreprocessing with noop_max > 0) cannot be played there.
NO_NOOP_GAMES = ("Backgammon", "VideoCheckers")


def all_games() -> list[str]:
    import ale_py

    gym.register_envs(ale_py)
    return sorted(
        name[len("ALE/"):-len("-v5")]
        for name in gym.registry
        if name.startswith("ALE/") and name.endswith("-v5") and "-ram" not in name
        and name[len("ALE/"):-len("-v5")] not in NO_NOOP_GAMES
    )


class GameScore(gym.Wrapper):
    """Sums raw rewards over a whole game (across lives) into `info["game_score"]` at game over."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.score = 0.0

    def reset(self, **kwargs):
        self.score = 0.0
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.score += float(reward)
        if terminated or truncated:
            info["game_score"] = self.score
        return obs, reward, terminated, truncated, info


class FrameCounter(gym.Wrapper):
    """`info["frames"]`: emulator frames consumed since the env was made (frame skip counted)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.frames = 0

    def _frame_number(self) -> int:
        return int(self.env.unwrapped.ale.getFrameNumber())

    def reset(self, **kwargs):
        # Frames spent in no-op starts are not counted: Atari-100k budgets count agent steps x 4.
        obs, info = self.env.reset(**kwargs)
        return obs, dict(info, frames=self.frames, step_frames=0)

    def step(self, action):
        before = self._frame_number()
        obs, reward, terminated, truncated, info = self.env.step(action)
        step_frames = self._frame_number() - before
        self.frames += step_frames
        return obs, reward, terminated, truncated, dict(info, frames=self.frames, step_frames=step_frames)


def make_atari(
    game: str,
    *,
    terminal_on_life_loss: bool = False,
    noop_max: int = 30,
    frame_skip: int = FRAME_SKIP,
    screen_size: int = 84,
    max_episode_frames: int = MAX_EPISODE_FRAMES,
    repeat_action_probability: float = 0.0,
    render_mode: str | None = "rgb_array",
) -> gym.Env:
    """One game, observations uint8 (1, 84, 84) per agent step before frame stacking; render()
    gives the full-colour screen (evaluation videos), drawn only when asked for."""
    import ale_py

    gym.register_envs(ale_py)
    env = gym.make(
        f"ALE/{game}-v5",
        frameskip=1,  # AtariPreprocessing skips and max-pools
        repeat_action_probability=repeat_action_probability,
        full_action_space=False,
        max_num_frames_per_episode=max_episode_frames,
        render_mode=render_mode,
    )
    env = gym.wrappers.AtariPreprocessing(
        env, noop_max=noop_max, frame_skip=frame_skip, screen_size=screen_size,
        terminal_on_life_loss=False, grayscale_obs=True, grayscale_newaxis=False, scale_obs=False,
    )
    env = GameScore(env)
    if terminal_on_life_loss:
        from stable_baselines3.common.atari_wrappers import EpisodicLifeEnv

        env = EpisodicLifeEnv(env)
    env = FrameCounter(env)
    # channels-first (1, H, W) so that frame stacking concatenates along channels like DMC
    return gym.wrappers.TransformObservation(
        env, lambda frame: frame[None],
        gym.spaces.Box(0, 255, (1, screen_size, screen_size), dtype=np.uint8),
    )
