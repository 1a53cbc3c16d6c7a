"""Goal-conditioned behaviour cloning (GCBC; Lynch et al. 2019, Ghosh et al. 2019), the offline
baseline of contrastive RL and TD-InfoNCE.

Hindsight relabelling turns any trajectory into demonstrations: the action a_t taken at s_t is
treated as the right action for reaching a future state g = s_{t+k} of the same trajectory (k
geometric, as the contrastive agents sample goals). The policy maximises log pi(a_t | s_t, g).
Networks as TD-InfoNCE's released GCBC (its `use_gcbc` mode): a tanh-Gaussian policy, 4x512
(offline preset 4x1024).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from crl.encoders import GoalInputs
from crl.rl import Checkpointable, TanhGaussianActor, metrics_to_floats, optimize, require_continuous_actions


@dataclass
class Config:
    gamma: float = 0.99  # discount of the relabelled-goal distribution
    batch_size: int = 256
    lr: float = 3e-4  # contrastive RL's GCBC; TD-InfoNCE's `use_gcbc` mode trains its policy at 5e-5
    hidden_dims: tuple[int, ...] = (512, 512, 512, 512)
    layer_norm: bool = False
    feature_dim: int = 50  # image goals only: conv encoder output


PRESETS = {
    "offline": dict(batch_size=1024, hidden_dims=(1024, 1024, 1024, 1024), updates=500_000,
                    eval_every_updates=50_000),
    "offline-cpu": dict(batch_size=256, hidden_dims=(256, 256), updates=20_000, eval_every_updates=2_000,
                        eval_episodes=20),
}


class Agent(Checkpointable):
    name = "gcbc"
    batch_kind = "goals"

    def __init__(self, obs_space, action_space, config: Config, device: str | torch.device = "cpu"):
        require_continuous_actions(self.name, action_space)
        self.config = config
        self.device = torch.device(device)
        self.inputs = GoalInputs(obs_space, config.feature_dim).to(self.device)  # images: trained by BC
        self.action_dim = int(np.prod(action_space.shape))
        self.actor = TanhGaussianActor(self.inputs.state_dim + self.inputs.goal_dim, self.action_dim,
                                       config.hidden_dims, layer_norm=config.layer_norm,
                                       init="xavier_uniform").to(self.device)
        self.actor_opt = torch.optim.Adam([*self.actor.parameters(), *self.inputs.parameters()], lr=config.lr)

    def modules(self) -> dict[str, nn.Module]:
        return {"inputs": self.inputs, "actor": self.actor}

    def sampler_options(self) -> dict:
        return {"gamma": self.config.gamma, "goal_field": self.inputs.goal_field}

    def features(self, state, goal, augment: bool = False) -> torch.Tensor:
        state, goal = torch.as_tensor(state, device=self.device), torch.as_tensor(goal, device=self.device)
        return torch.cat([self.inputs.state(state, augment), self.inputs.goal(goal, augment)], -1)

    @torch.no_grad()
    def act(self, obs: dict, explore: bool) -> np.ndarray:
        features = self.features(obs["observation"], obs["desired_goal"])
        return self.actor(features, deterministic=not explore)[0].cpu().numpy()

    def update(self, batch: dict, step: int) -> dict[str, float]:
        features = self.features(batch["observation"], batch["goal"], augment=True)
        loss = -self.actor.log_prob(features, batch["action"].to(self.device).float()).mean()
        optimize(self.actor_opt, loss)
        return metrics_to_floats({"bc_loss": loss.detach()})

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor_opt": self.actor_opt}
