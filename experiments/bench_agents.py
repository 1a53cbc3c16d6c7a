"""Update-step speed of the pixel agents against the reference implementations and the FLOP floor.

Times one gradient update at the paper's batch size on a synthetic batch, for ours and, when
`--reference DIR` holds checkouts of the reference code (DIR/drqv2 = facebookresearch/drqv2,
DIR/curl = MishaLaskin/curl; fetched only for this measurement, never committed), for theirs on
the same machine in the same process. Ours runs in fp32 (the papers' precision) and with the convs
in bfloat16 (`precision="bfloat16"`, crl/encoders.py); the references run in fp32. Also reports the
FLOP floor: the conv FLOPs of one update (from the layer shapes) at this CPU's matmul peak in the
same precision, measured in the same run. Both ours and the references run with crl's allocator
setting (crl/system.py; `--default-malloc` leaves glibc's).

    .venv/bin/python experiments/bench_agents.py --reference /tmp/refs --write
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import types
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from benchlib import command_line, interleaved_wall_times, machine_line, matmul_gflops, write_section
from crl.encoders import BF16_MIN_SPEEDUP, auto_precision_notice, conv_flops
from crl.system import cpu_has_bf16_units, cpu_label, keep_freed_memory

ACTION_DIM = 6
# Untimed updates first: with crl's allocator setting the heap grows over the first few updates
# (DrQ-v2 at batch 256 on an AVX2 CPU: 2.2, 1.5, 1.2, then ~1.05 s).
WARMUP = 4


def update_conv_flops(batch: int, forward_passes: float, backward_passes: float, size: int = 84) -> float:
    """Conv FLOPs of an update: forward passes, and backward passes at ~2x a forward (weight and
    input gradients) less the first layer's input gradient, which nobody needs."""
    layers = conv_flops((9, size, size))
    forward = sum(layers)
    backward = 2 * forward - layers[0]
    return batch * (forward_passes * forward + backward_passes * backward)


def synthetic_batch(batch: int, size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "obs": torch.randint(0, 256, (batch, 9, size, size), dtype=torch.uint8, generator=g),
        "next_obs": torch.randint(0, 256, (batch, 9, size, size), dtype=torch.uint8, generator=g),
        "action": torch.rand(batch, ACTION_DIM, generator=g) * 2 - 1,
        "reward": torch.rand(batch, generator=g),
        "discount": torch.full((batch,), 0.99**3),
    }


def spaces(size: int):
    return (gym.spaces.Box(0, 255, (9, size, size), np.uint8),
            gym.spaces.Box(-1, 1, (ACTION_DIM,), np.float32))


# -- DrQ-v2 -------------------------------------------------------------------------------------

def ours_drqv2(batch_size: int, precision: str):
    from crl.agents import drqv2

    agent = drqv2.Agent(*spaces(84), drqv2.Config(batch_size=batch_size, precision=precision))
    batch = synthetic_batch(batch_size, 84)
    step = itertools.count(2, 2)
    return lambda: agent.update(batch, next(step))


def reference_drqv2(ref: Path, batch_size: int):
    sys.modules.setdefault("hydra", types.ModuleType("hydra"))
    omegaconf = types.ModuleType("omegaconf")
    omegaconf.OmegaConf = object
    sys.modules.setdefault("omegaconf", omegaconf)
    sys.path.insert(0, str(ref / "drqv2"))
    try:
        import drqv2 as reference  # noqa: PLC0415 - the reference checkout, on sys.path only here
    finally:
        sys.path.pop(0)
    sys.modules.pop("utils", None)  # CURL has a module of the same name
    agent = reference.DrQV2Agent((9, 84, 84), (ACTION_DIM,), "cpu", lr=1e-4, feature_dim=50, hidden_dim=1024,
                                 critic_target_tau=0.01, num_expl_steps=2000, update_every_steps=2,
                                 stddev_schedule="linear(1.0,0.1,500000)", stddev_clip=0.3, use_tb=False)
    b = synthetic_batch(batch_size, 84)
    # the reference replay yields numpy arrays, rewards and discounts shaped (B, 1)
    numpy_batch = (b["obs"].numpy(), b["action"].numpy(), b["reward"][:, None].numpy(),
                   b["discount"][:, None].numpy(), b["next_obs"].numpy())
    step = itertools.count(2, 2)
    return lambda: agent.update(itertools.repeat(numpy_batch), next(step))


# -- CURL ---------------------------------------------------------------------------------------

def ours_curl(batch_size: int, precision: str):
    from crl.agents import curl

    agent = curl.Agent(*spaces(100), curl.Config(batch_size=batch_size, precision=precision))
    batch = synthetic_batch(batch_size, 100)
    step = itertools.count(1)
    return lambda: agent.update(batch, next(step))


class _NullLogger:
    def log(self, *args, **kwargs):
        pass


class _CroppedBatches:
    """Stands in for CURL's replay: the crops are already done (their sampler does them in numpy)."""

    def __init__(self, batch: dict[str, torch.Tensor]):
        crop = slice(8, 92)
        self.obs = batch["obs"][:, :, crop, crop].float()
        self.next_obs = batch["next_obs"][:, :, crop, crop].float()
        self.pos = batch["obs"][:, :, 0:84, 0:84].float()
        self.action, self.reward = batch["action"], batch["reward"][:, None]

    def sample_cpc(self):
        kwargs = dict(obs_anchor=self.obs, obs_pos=self.pos, time_anchor=None, time_pos=None)
        return self.obs, self.action, self.reward, self.next_obs, torch.ones_like(self.reward), kwargs


def reference_curl(ref: Path, batch_size: int):
    skimage = types.ModuleType("skimage")
    util = types.ModuleType("skimage.util")
    shape = types.ModuleType("skimage.util.shape")
    shape.view_as_windows = None
    for name, module in (("skimage", skimage), ("skimage.util", util), ("skimage.util.shape", shape)):
        sys.modules.setdefault(name, module)
    sys.modules.setdefault("gym", gym)
    sys.modules.pop("utils", None)
    sys.path.insert(0, str(ref / "curl"))
    try:
        import curl_sac as reference  # noqa: PLC0415
    finally:
        sys.path.pop(0)
    agent = reference.CurlSacAgent(
        (9, 84, 84), (ACTION_DIM,), "cpu", hidden_dim=1024, init_temperature=0.1, alpha_lr=1e-4,
        alpha_beta=0.5, critic_tau=0.01, encoder_tau=0.05, encoder_feature_dim=50, curl_latent_dim=128)
    replay = _CroppedBatches(synthetic_batch(batch_size, 100))
    step = itertools.count(1)
    return lambda: agent.update(replay, _NullLogger(), next(step))


# -- report -------------------------------------------------------------------------------------

# Conv passes per update (forward, backward) at 84x84, averaged over steps for CURL's every-2 parts.
# DrQ-v2: encode obs (with grad) and next obs; backward through the encoder once.
# CURL: critic encode obs (grad) + target-encode next obs; actor re-encodes obs every 2nd step and
# the target actor next obs (every step, for the critic target); CURL query (grad) + key.
PASSES = {"DrQ-v2": (2.0, 1.0), "CURL": (2.0 + 0.5 + 1.0 + 2.0, 2.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, help="folder with drqv2/ and curl/ reference checkouts")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--default-malloc", action="store_true", help="leave glibc's allocator settings")
    parser.add_argument("--bf16", action="store_true",
                        help="time bf16 even where the CPU has no bf16 units (emulated: very slow)")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    allocator = "glibc's default allocator" if args.default_malloc or not keep_freed_memory() else \
        "crl's allocator setting (crl/system.py)"
    # Without bf16 units (AVX2-only CPUs) a bf16 matmul runs at well under 1 GFLOP/s: skip it.
    precisions = {"float32": torch.float32}
    if args.bf16 or cpu_has_bf16_units():
        precisions["bfloat16"] = torch.bfloat16
    peaks = {precision: matmul_gflops(dtype, warmup=WARMUP) for precision, dtype in precisions.items()}
    peak_text = ", ".join(f"{peak:.0f} GFLOP/s {'fp32' if p == 'float32' else 'bf16'}" for p, peak in peaks.items())

    rows = []
    for name, batch, ours, reference in (("DrQ-v2", 256, ours_drqv2, reference_drqv2),
                                         ("CURL", 512, ours_curl, reference_curl)):
        updates = {precision: ours(batch, precision) for precision in peaks}
        if args.reference:  # without the checkouts the column reads "nan" (see the module docstring)
            updates["reference"] = reference(args.reference, batch)
        # in turns: this shared VM's speed drifts by tens of percent between minutes
        times = interleaved_wall_times(updates, args.reps, warmup=WARMUP)
        seconds = {key: statistics.median(values) for key, values in times.items()}
        ref_s = seconds.get("reference", float("nan"))
        for precision, peak in peaks.items():
            ours_s = seconds[precision]
            floor_s = update_conv_flops(batch, *PASSES[name]) / (peak * 1e9)
            rows.append(f"| {name} | {precision} | {batch} | {ours_s:.2f} | {ref_s:.2f} | {ref_s / ours_s:.2f}x | "
                        f"{floor_s:.2f} | {ours_s / floor_s:.2f}x |")
            print(rows[-1], flush=True)
    body = "\n".join([
        f"Command: `{command_line()}`", "", machine_line() + f" torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {allocator}.",
        "One update (median of the timed steps, ours and the reference timed in turns, synthetic batch, "
        "paper batch size). Ours includes the augmentation (DrQ-v2: bilinear shift of obs and next "
        "obs; CURL: three 100->84 crops); CURL's reference gets batches already cropped (its replay "
        "crops in numpy). The references run in fp32; ours in fp32 and, where the CPU has bf16 units, with its convs in bf16 (`precision`). FLOP "
        "floor: conv FLOPs of one update from the layer shapes at this CPU's matmul peak in that precision, "
        f"measured in this run (2048^3 products: {peak_text}). `{auto_precision_notice('cpu')}` "
        f"(crl/encoders.py: bf16 needs {BF16_MIN_SPEEDUP}x).",
        "", "| agent | precision | batch | ours (s) | reference fp32 (s) | speed-up | FLOP floor (s) | ours / floor |",
        "|---|---|---:|---:|---:|---:|---:|---:|", *rows])
    print(body)
    if args.write:
        # one section per CPU model: the ratios differ between CPUs (bf16 units, AVX-512 or not)
        allocator_tag = ", glibc default allocator" if args.default_malloc else ""
        write_section(f"Agent updates ({cpu_label()}{allocator_tag})", body)


if __name__ == "__main__":
    main()
