"""`make demo`: one episode of a random policy on a DMC pixel task, saved as a video.

The shared-core issue turns this into a training run; for now it shows the environment stack
end to end (rendering, action repeat, frame stacking, frame counting) with no download.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def run_demo(logdir: str, env_id: str = "dmc:cartpole-swingup", seed: int = 0) -> dict:
    import imageio.v2 as imageio

    from crl import envs

    out = Path(logdir)
    out.mkdir(parents=True, exist_ok=True)
    env = envs.make(env_id)
    env.action_space.seed(seed)
    obs, info = env.reset(seed=seed)
    frames, episode_return, start = [obs[-3:].transpose(1, 2, 0)], 0.0, time.time()
    done = False
    while not done:
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        episode_return += reward
        frames.append(obs[-3:].transpose(1, 2, 0))
        done = terminated or truncated
    seconds = time.time() - start
    video = out / "random_policy.mp4"
    imageio.mimsave(video, np.stack(frames), fps=30, macro_block_size=1)
    result = {"env": env_id, "return": episode_return, "frames": info["frames"],
              "agent_steps": len(frames) - 1, "frames_per_s": info["frames"] / seconds, "video": str(video)}
    print(f"{env_id}: random policy, return {episode_return:.1f} over {info['frames']} frames "
          f"({len(frames) - 1} agent steps, {result['frames_per_s']:.0f} frames/s); video: {video}")
    env.close()
    return result
