"""Benchmark the DrQ/CURL conv encoder: forward+backward, contiguous vs channels_last.

Times one training-style step (uint8 pixels -> ConvEncoder (4 convs + Linear -> LayerNorm ->
tanh) -> Linear(50, 1) -> sum -> backward) at batch 256 on 9x84x84, in both memory layouts,
interleaving the layouts so that load from other processes hits both alike. Reports the median
and best step time and the achieved GFLOP/s, counted from the layer shapes:

* forward: 2 * MACs of each conv (about 85 MFLOP per sample) and of the 39200 x 50 Linear;
* backward: the weight gradient of every layer (= its forward FLOPs) plus the input gradient of
  every layer but the first conv (whose input needs no gradient) -- about 2x forward.

Then each conv layer alone (channels_last, fp32, the encoder's layout): forward, and backward
(weight gradient, plus the input gradient for all but the first), in GFLOP/s beside this CPU's
fp32 matmul rate -- where an update's conv time goes. Also times the augmentations of crl.augment
at the same batch, for reference.

    python experiments/bench_encoders.py            # print markdown tables
    python experiments/bench_encoders.py --write    # also replace "## Encoders" in BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
from pathlib import Path

import torch
from torch import nn

from benchlib import (command_line, interleaved_wall_times, matmul_gflops, median_seconds, wall_times,
                      write_section)
from crl import augment
from crl.encoders import ConvEncoder, conv_flops
from crl.system import cpu_name

ROOT = Path(__file__).resolve().parents[1]


def step_flops(obs_shape, feature_dim=50) -> tuple[float, float]:
    """(forward, backward) FLOPs per sample for the encoder + Linear(50, 1) head."""
    convs = conv_flops(obs_shape)
    repr_dim = 32 * 35 * 35 if tuple(obs_shape[1:]) == (84, 84) else None
    if repr_dim is None:
        raise ValueError("flop count written for 84x84 inputs")
    fc = 2 * repr_dim * feature_dim
    out = 2 * feature_dim
    fwd = sum(convs) + fc + out
    bwd = (sum(convs) + fc + out) + (sum(convs[1:]) + fc + out)
    return float(fwd), float(bwd)


def time_encoder(batch: int, reps: int, warmup: int) -> dict[str, list[float]]:
    obs_shape = (9, 84, 84)
    x = torch.randint(0, 256, (batch, *obs_shape), dtype=torch.uint8)
    models = {}
    for name, cl in (("contiguous", False), ("channels_last", True)):
        torch.manual_seed(0)
        enc = ConvEncoder(obs_shape, 50, channels_last=cl)
        models[name] = (enc, nn.Linear(50, 1))

    def step(enc, head):
        enc.zero_grad(set_to_none=True)
        head.zero_grad(set_to_none=True)
        head(enc(x)).sum().backward()

    steps = {name: (lambda enc=enc, head=head: step(enc, head)) for name, (enc, head) in models.items()}
    return interleaved_wall_times(steps, reps, warmup)


def time_conv_layers(batch: int, reps: int, warmup: int) -> list[tuple[str, float, float, float, float]]:
    """(layer, forward s, backward s, forward FLOPs, backward FLOPs) for each conv of the encoder,
    alone, on a batch of its input's shape in the layout the encoder runs (channels_last)."""
    torch.manual_seed(0)
    encoder = ConvEncoder((9, 84, 84), conv_only=True, channels_last=True)
    convs = [layer for layer in encoder.convs if isinstance(layer, nn.Conv2d)]
    x = torch.randn(batch, *encoder.obs_shape).contiguous(memory_format=torch.channels_last)
    rows = []
    for i, (conv, flops) in enumerate(zip(convs, conv_flops(encoder.obs_shape))):
        x.requires_grad_(i > 0)  # the first conv reads pixels, which need no gradient
        grad = torch.randn_like(conv(x))  # channels_last, as the conv's output

        def forward_backward():
            conv.zero_grad(set_to_none=True)
            conv(x).backward(grad)
            x.grad = None

        with torch.no_grad():
            forward = median_seconds(lambda: conv(x), reps, warmup)
        backward = median_seconds(forward_backward, reps, warmup) - forward
        label = (f"conv{i + 1}: {conv.in_channels}->{conv.out_channels}, stride {conv.stride[0]}, "
                 f"{x.shape[-2]}x{x.shape[-1]} in")
        rows.append((label, forward, backward, flops * batch, flops * batch * (1 if i == 0 else 2)))
        x = torch.randn_like(grad)  # the next conv's input
    return rows


def time_augment(batch: int, reps: int) -> dict[str, list[float]]:
    x84 = torch.randint(0, 256, (batch, 9, 84, 84), dtype=torch.uint8)
    x100 = torch.randint(0, 256, (batch, 9, 100, 100), dtype=torch.uint8)
    f84 = x84.float()
    cases = {
        "random_shift (DrQ), uint8 84": lambda: augment.random_shift(x84, 4),
        "random_shift (DrQ), float32 84": lambda: augment.random_shift(f84, 4),
        "random_shift_bilinear (DrQ-v2), float32 84": lambda: augment.random_shift_bilinear(f84, 4),
        "random_crop 100->84 (CURL), uint8": lambda: augment.random_crop(x100, 84),
        "center_crop 100->84, uint8": lambda: augment.center_crop(x100, 84),
    }
    return {name: wall_times(fn, reps) for name, fn in cases.items()}


def render(args, enc_times, layer_times, peak, aug_times, command: str) -> str:
    fwd, bwd = step_flops((9, 84, 84))
    gflop = (fwd + bwd) * args.batch / 1e9
    lines = [
        f"Command: `{command}`",
        "",
        f"Machine: {cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"Python {platform.python_version()}. Batch {args.batch} of uint8 9x84x84; one step = "
        "ConvEncoder (4 convs 3x3/32, Linear 39200->50, LayerNorm, tanh) + Linear(50, 1), "
        f"forward + backward; {args.warmup} warm-up and {args.reps} timed steps per layout, "
        "layouts interleaved. 1-min load average before the run: "
        f"{args.load_before:.2f} (other processes share the 2 cores; steps slow down accordingly).",
        "",
        f"FLOPs per sample from the layer shapes: forward {fwd / 1e6:.1f} M (convs "
        f"{sum(conv_flops((9, 84, 84))) / 1e6:.1f} M), backward {bwd / 1e6:.1f} M "
        f"(weight grads of all layers + input grads of all but the first conv); "
        f"{gflop:.1f} GFLOP per step.",
        "",
        "| layout | median step (s) | best step (s) | GFLOP/s (median) | GFLOP/s (best) |",
        "|---|---|---|---|---|",
    ]
    med = {}
    for name, ts in enc_times.items():
        m, b = statistics.median(ts), min(ts)
        med[name] = m
        lines.append(f"| {name} | {m:.3f} | {b:.3f} | {gflop / m:.1f} | {gflop / b:.1f} |")
    speedup = med["contiguous"] / med["channels_last"]
    lines += [
        "",
        f"channels_last speed-up (median contiguous / median channels_last): **{speedup:.2f}x**. "
        "`crl.encoders.CHANNELS_LAST_DEFAULT` is "
        f"`{__import__('crl.encoders', fromlist=['x']).CHANNELS_LAST_DEFAULT}`.",
        "",
        f"Each conv alone at batch {args.batch}, channels_last, fp32 (median of {args.reps}); this CPU's "
        f"fp32 matmul peak (best 2048^3 product) is {peak:.0f} GFLOP/s:",
        "",
        "| layer | forward (ms) | GFLOP/s | backward (ms) | GFLOP/s |",
        "|---|---:|---:|---:|---:|",
        *(f"| {label} | {fwd_s * 1e3:.1f} | {fwd_f / fwd_s / 1e9:.0f} | {bwd_s * 1e3:.1f} | {bwd_f / bwd_s / 1e9:.0f} |"
          for label, fwd_s, bwd_s, fwd_f, bwd_f in layer_times),
        "",
        f"Augmentations at batch {args.batch} (median of {args.reps}):",
        "",
        "| augmentation | median (ms) |",
        "|---|---|",
    ]
    for name, ts in aug_times.items():
        lines.append(f"| {name} | {statistics.median(ts) * 1e3:.1f} |")
    lines.append("")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--write", action="store_true", help="replace the Encoders section of BENCHMARKS.md")
    p.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = p.parse_args(argv)

    args.load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    torch.set_num_threads(min(args.threads, 2))
    torch.set_flush_denormal(True)
    enc_times = time_encoder(args.batch, args.reps, args.warmup)
    layer_times = time_conv_layers(args.batch, args.reps, args.warmup)
    peak = matmul_gflops()
    aug_times = time_augment(args.batch, args.reps)
    section = render(args, enc_times, layer_times, peak, aug_times, command_line())
    print(section)
    if args.write:
        write_section("Encoders", section, args.out)
        print(f"wrote the Encoders section of {args.out}")


if __name__ == "__main__":
    main()
