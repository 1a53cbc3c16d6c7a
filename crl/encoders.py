"""Conv and MLP encoders shared by the pixel agents, and weight-initialisation schemes.

Pieces (see ALGORITHMS.md, "Shared pixel pieces"):

* :class:`ConvEncoder` -- the SAC-AE / CURL / DrQ encoder: 4 conv layers (3x3, 32 filters, first
  stride 2, no padding, ReLU after each), flattened, then Linear -> LayerNorm (-> tanh) to a 50-d
  feature. Pixels are scaled ``x / 255 + pixel_offset``.

  tanh: ``output_tanh=True`` (the default) is DrQ's and SAC-AE's encoder. CURL builds its
  actor/critic encoders with ``output_logits=True``, i.e. *no* tanh after the LayerNorm, so a CURL
  agent must pass ``output_tanh=False``.
  ``conv_only=True`` drops the head and returns the flattened conv features.
* :class:`DrQV2Encoder` -- DrQ-v2: the same convs, pixels ``x / 255 - 0.5``, output the flattened
  ``32 x 35 x 35`` features (for 84 x 84) with no linear layer; each network then owns a
  :class:`Trunk` (Linear -> LayerNorm -> tanh).
* :class:`MLP` -- configurable widths, activation, optional LayerNorm after each hidden Linear
  (Linear -> LayerNorm -> activation), optional near-zero last layer.
* Init schemes (:func:`init_weights`): ``"orthogonal"`` (DrQ, DrQ-v2: Linear orthogonal gain 1,
  Conv orthogonal gain sqrt(2), zero biases), ``"delta_orthogonal"`` (SAC-AE, CURL: conv kernel
  zero except an orthogonal centre tap with gain sqrt(2)), ``"xavier_uniform"`` (our goal
  agents; the Zheng et al. 2023 release uses LeCun uniform, see agents/td_infonce.py), ``"default"`` (leave PyTorch's). :func:`init_near_zero_` for a last layer.

Memory layout: on the 2-core x86 CPU this was written on (torch 2.13), forward+backward of the
conv encoder (+ head) at batch 256 on uint8 9x84x84 was about 1.4x faster with
``torch.channels_last`` than with the default layout (interleaved A/B runs: median ratio 1.34x
with 2 threads and 1.38x with 1 thread, on a shared, loaded machine; not the 2x once noted in
DESIGN.md). See BENCHMARKS.md, "Encoders", and experiments/bench_encoders.py. So the conv encoders
default to ``channels_last=True``: conv weights are stored channels_last and each input is
converted inside ``forward``. Outputs agree between the layouts up to float rounding (the
flatten is always in ``C, H, W`` order, so state_dicts are interchangeable between them). Not measured on
a GPU; pass ``channels_last=False`` to get the default layout.

Precision: ``compute_dtype=torch.bfloat16`` runs the convs (and the Linear that reads their
features: the head here, DrQ-v2's :class:`Trunk`) under bfloat16 autocast; weights, gradients'
accumulation, optimiser state, LayerNorm, the Q/policy MLPs and the losses stay fp32. The papers
train in fp32 (the default); on a CPU with bf16 matrix units (AMX) the convs ran 3-4x faster here,
a DrQ-v2 update at batch 256 1.85x and a CURL update at batch 512 2.0x (BENCHMARKS.md, "Agent
updates"); an Intel Xeon that reports AVX512-BF16 but no AMX ran them 0.7x as fast as fp32, so
"auto" measures (:func:`cpu_bf16_conv_speedup`) rather than trusting the CPU's flags. Learning with
it: BENCHMARKS.md, "Pixel agents on CPU". :func:`resolve_precision` turns an agent's ``precision``
setting ("float32", "bfloat16", "auto") into the dtype. On an Ampere or newer GPU, "float32" convs
run in TF32 as PyTorch's default (``torch.backends.cudnn.allow_tf32``) lets cuDNN; crl leaves that
default (set it False for strict fp32).
"""

from __future__ import annotations

import functools
import math
import time
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from crl.augment import random_shift
from crl.system import cpu_has_bf16_units

__all__ = [
    "CHANNELS_LAST_DEFAULT",
    "PRECISIONS",
    "resolve_precision",
    "cpu_bf16_conv_speedup",
    "auto_precision_notice",
    "BF16_MIN_SPEEDUP",
    "conv_output_size",
    "ConvEncoder",
    "DrQV2Encoder",
    "Trunk",
    "MLP",
    "make_activation",
    "init_weights",
    "orthogonal_init_",
    "delta_orthogonal_init_",
    "xavier_uniform_init_",
    "init_near_zero_",
    "conv_flops",
]

#: Measured on the 2-core x86 CPU (torch 2.13): channels_last forward+backward of the conv encoder
#: at batch 256 x 9x84x84 was ~1.4x faster than the contiguous layout. See the module docstring.
CHANNELS_LAST_DEFAULT = True

RELU_GAIN = math.sqrt(2.0)

PRECISIONS = ("float32", "bfloat16", "auto")


def resolve_precision(precision: str, device: str | torch.device) -> torch.dtype:
    """The conv encoders' compute dtype for an agent's ``precision`` setting: "float32" (the
    papers'), "bfloat16", or "auto" = bfloat16 where it is native and fast (a CUDA GPU of compute
    capability 8.0 or more, where cuDNN has bf16 convs; a CPU whose bf16 convs ran at least
    ``BF16_MIN_SPEEDUP`` times faster than fp32 in :func:`cpu_bf16_conv_speedup`), else float32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        device = torch.device(device)
        if device.type == "cuda":
            # cuDNN runs bf16 convs natively from compute capability 8.0 (Ampere) on; older GPUs
            # "support" bf16 through slow fallback kernels (torch.cuda.is_bf16_supported says yes)
            native = torch.cuda.is_available() and torch.cuda.get_device_capability(device) >= (8, 0)
        else:
            native = device.type == "cpu" and cpu_bf16_conv_speedup() >= BF16_MIN_SPEEDUP
        precision = "bfloat16" if native else "float32"
    return torch.bfloat16 if precision == "bfloat16" else torch.float32


#: "auto" runs a CPU's convs in bfloat16 only where they were at least this much faster than in
#: fp32 (measured: 2.5-4x with AMX or on AMD's AVX512-BF16, 0.7x on an Intel Xeon reporting
#: AVX512-BF16 without AMX; BENCHMARKS.md, "Agent updates").
BF16_MIN_SPEEDUP = 1.2


@functools.cache
def cpu_bf16_conv_speedup(batch: int = 16, reps: int = 3) -> float:
    """fp32 time / bf16 time of the conv encoder's forward and backward on ``batch`` 9x84x84
    frames on this CPU (best of ``reps`` each, in turns), measured once per process (~0.3 s).
    0 where the CPU has no bf16 units (there bf16 is emulated and far slower). The flags alone
    do not tell: an Intel Xeon listing AVX512-BF16 but no AMX ran bf16 convs 0.7x as fast as fp32
    (oneDNN, torch 2.13), AMD's Zen 4 2.5x. The global random state is left as it was."""
    if not cpu_has_bf16_units():
        return 0.0
    with torch.random.fork_rng(devices=[]):
        frames = torch.randint(0, 256, (batch, 9, 84, 84), dtype=torch.uint8)
        encoders = {dtype: DrQV2Encoder((9, 84, 84), compute_dtype=dtype)
                    for dtype in (torch.float32, torch.bfloat16)}
        best = dict.fromkeys(encoders, math.inf)
        for rep in range(reps + 1):  # the first round warms up oneDNN's kernels
            for dtype, encoder in encoders.items():
                start = time.perf_counter()
                encoder(frames).float().sum().backward()
                if rep:
                    best[dtype] = min(best[dtype], time.perf_counter() - start)
    return best[torch.float32] / best[torch.bfloat16]


def auto_precision_notice(device: str | torch.device) -> str:
    """What ``precision="auto"`` chooses on ``device``, and on a CPU the measurement it chose by."""
    device = torch.device(device)
    chosen = str(resolve_precision("auto", device)).removeprefix("torch.")
    if device.type != "cpu":
        return f"precision auto: convs in {chosen} on {device}"
    speedup = cpu_bf16_conv_speedup()
    why = f"bf16 convs ran {speedup:.2f}x as fast as fp32 here" if speedup else "this CPU has no bf16 units"
    return f"precision auto: convs in {chosen} ({why})"


def autocast_to(dtype: torch.dtype, x: Tensor):
    """bfloat16 autocast on ``x``'s device when ``dtype`` is bfloat16, else a no-op context."""
    return torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)


# --------------------------------------------------------------------------- init schemes


def _set_weight(param: Tensor, value: Tensor) -> None:
    # Copy through .copy_ so that the parameter keeps its own memory format (channels_last conv
    # weights cannot be viewed as a 2-d matrix, which nn.init.orthogonal_ would do).
    with torch.no_grad():
        param.copy_(value.to(device=param.device, dtype=param.dtype))


def _zero_bias(m: nn.Module) -> None:
    if getattr(m, "bias", None) is not None:
        with torch.no_grad():
            m.bias.zero_()


def orthogonal_init_(m: nn.Module, gain: float | None = None) -> nn.Module:
    """Orthogonal init of a Linear / Conv layer, zero bias (DrQ and DrQ-v2's ``weight_init``).

    Default gain: 1 for Linear, sqrt(2) (ReLU) for conv layers. The weight, viewed as a
    ``(out, in * kh * kw)`` matrix ``W``, satisfies ``W W^T = gain^2 I`` when it has no more
    rows than columns, else ``W^T W = gain^2 I``.
    """
    if gain is None:
        gain = RELU_GAIN if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) else 1.0
    w = torch.empty(m.weight.shape, dtype=torch.float32)
    nn.init.orthogonal_(w, gain=gain)
    _set_weight(m.weight, w)
    _zero_bias(m)
    return m


def delta_orthogonal_init_(m: nn.Conv2d, gain: float = RELU_GAIN) -> nn.Conv2d:
    """SAC-AE / CURL conv init (delta-orthogonal, Xiao et al. 2018): all taps zero except the
    centre one, which is an orthogonal ``(out, in)`` matrix times ``gain``; zero bias."""
    kh, kw = m.weight.shape[2], m.weight.shape[3]
    if kh != kw:
        raise ValueError("delta-orthogonal init needs a square kernel")
    w = torch.zeros(m.weight.shape, dtype=torch.float32)
    centre = torch.empty(w.shape[0], w.shape[1])
    nn.init.orthogonal_(centre, gain=gain)
    w[:, :, kh // 2, kw // 2] = centre
    _set_weight(m.weight, w)
    _zero_bias(m)
    return m


def xavier_uniform_init_(m: nn.Module, gain: float = 1.0) -> nn.Module:
    """Xavier (Glorot) uniform weights, zero bias."""
    w = torch.empty(m.weight.shape, dtype=torch.float32)
    nn.init.xavier_uniform_(w, gain=gain)
    _set_weight(m.weight, w)
    _zero_bias(m)
    return m


def init_near_zero_(m: nn.Module, scale: float = 1e-4, mode: str = "uniform") -> nn.Module:
    """Initialise a (last) layer near zero; bias set to zero.

    ``mode="uniform"``: weights uniform in ``[-scale, scale]``.
    ``mode="scaled"``: the layer's current weights multiplied by ``scale``.
    """
    with torch.no_grad():
        if mode == "uniform":
            m.weight.uniform_(-scale, scale)
        elif mode == "scaled":
            m.weight.mul_(scale)
        else:
            raise ValueError(f"unknown near-zero mode {mode!r}; use 'uniform' or 'scaled'")
    _zero_bias(m)
    return m


_INIT_SCHEMES = ("orthogonal", "delta_orthogonal", "xavier_uniform", "default")


def init_weights(module: nn.Module, scheme: str = "orthogonal") -> nn.Module:
    """Apply an init scheme to every Linear / Conv2d inside ``module`` (LayerNorm untouched).

    * ``"orthogonal"``: DrQ / DrQ-v2 -- Linear orthogonal (gain 1), Conv orthogonal (gain sqrt 2).
    * ``"delta_orthogonal"``: SAC-AE / CURL -- Linear orthogonal, Conv delta-orthogonal.
    * ``"xavier_uniform"``: Linear and Conv Xavier uniform (gain 1).
    * ``"default"``: leave PyTorch's default init.
    Biases are zeroed except for ``"default"``. Returns ``module``.
    """
    if scheme not in _INIT_SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r}; choose from {_INIT_SCHEMES}")
    if scheme == "default":
        return module
    for m in module.modules():
        is_conv = isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))
        if not (is_conv or isinstance(m, nn.Linear)):
            continue
        if scheme == "orthogonal":
            orthogonal_init_(m)
        elif scheme == "delta_orthogonal":
            delta_orthogonal_init_(m) if is_conv else orthogonal_init_(m)
        else:
            xavier_uniform_init_(m)
    return module


# --------------------------------------------------------------------------- activations

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}


def make_activation(act: str | Callable[[], nn.Module] | None) -> nn.Module:
    """A fresh activation module from a name (``relu``, ``elu``, ``gelu``, ``tanh``,
    ``silu``/``swish``, ``leaky_relu``, ``sigmoid``, ``identity``), a zero-argument callable /
    module class, or ``None`` (identity)."""
    if act is None:
        return nn.Identity()
    if isinstance(act, str):
        try:
            return _ACTIVATIONS[act.lower()]()
        except KeyError:
            raise ValueError(f"unknown activation {act!r}; choose from {sorted(_ACTIVATIONS)}")
    return act()


# --------------------------------------------------------------------------- conv encoders


def conv_output_size(size: int, num_layers: int = 4, kernel: int = 3, first_stride: int = 2) -> int:
    """Spatial size after the encoder's convs (no padding): 84 -> 41 -> 39 -> 37 -> 35."""
    size = (size - kernel) // first_stride + 1
    for _ in range(num_layers - 1):
        size = size - kernel + 1
    if size < 1:
        raise ValueError("image too small for this conv stack")
    return size


def conv_flops(obs_shape: Sequence[int], num_layers: int = 4, num_filters: int = 32) -> list[int]:
    """Forward FLOPs (2 per multiply-add, biases ignored) of each conv layer for one sample."""
    c, h, w = obs_shape
    flops = []
    for i in range(num_layers):
        stride = 2 if i == 0 else 1
        h, w = (h - 3) // stride + 1, (w - 3) // stride + 1
        flops.append(2 * h * w * num_filters * c * 9)
        c = num_filters
    return flops


class _FlattenChannelsLast(torch.autograd.Function):
    """``h.flatten(1)`` of a channels_last ``h`` whose gradient goes back channels_last: autograd's
    own flatten returns it contiguous, and the last ReLU's backward on mismatched layouts is slow
    (bf16, 256 x 32 x 35 x 35: 22 ms against 3 ms, ~15 ms net per encoder backward)."""

    @staticmethod
    def forward(ctx, h: Tensor) -> Tensor:
        ctx.shape = h.shape
        return h.flatten(1)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad.view(ctx.shape).contiguous(memory_format=torch.channels_last)


class ConvEncoder(nn.Module):
    """SAC-AE / CURL / DrQ pixel encoder.

    Args:
        obs_shape: ``(C, H, W)`` of the (stacked) observation the encoder sees, e.g. (9, 84, 84).
        feature_dim: output size of the Linear -> LayerNorm head (50 in all three papers).
        num_layers, num_filters: conv stack (4 layers of 32 filters, 3x3, first stride 2).
        output_tanh: tanh after the LayerNorm (DrQ, SAC-AE: True; CURL: False).
        conv_only: no head; ``forward`` returns the flattened conv features (``repr_dim``).
        pixel_offset: pixels are scaled ``obs / 255 + pixel_offset`` (DrQ-v2 uses -0.5).
        init: weight init scheme, see :func:`init_weights` (DrQ: ``"orthogonal"``;
            SAC-AE/CURL: ``"delta_orthogonal"``).
        channels_last: store conv weights and run the convs in ``torch.channels_last``.
        compute_dtype: ``torch.float32`` or ``torch.bfloat16`` (autocast for the convs and the
            head's Linear; see the module docstring). ``conv_only`` features come out in it.

    Input: ``(B, C, H, W)`` raw pixels 0..255, uint8 or float (not pre-scaled).
    Attributes: ``repr_dim`` (flattened conv size), ``out_dim`` (size of ``forward``'s output),
    ``convs`` (``nn.Sequential`` of conv/ReLU; share it between networks to tie weights) and
    ``head`` (``nn.Sequential`` Linear, LayerNorm[, Tanh]; ``None`` when ``conv_only``).
    """

    def __init__(
        self,
        obs_shape: Sequence[int],
        feature_dim: int = 50,
        *,
        num_layers: int = 4,
        num_filters: int = 32,
        output_tanh: bool = True,
        conv_only: bool = False,
        pixel_offset: float = 0.0,
        init: str = "orthogonal",
        channels_last: bool = CHANNELS_LAST_DEFAULT,
        compute_dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        if compute_dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"compute_dtype must be torch.float32 or torch.bfloat16, got {compute_dtype}")
        if len(obs_shape) != 3:
            raise ValueError(f"obs_shape must be (C, H, W), got {tuple(obs_shape)}")
        c, h, w = (int(s) for s in obs_shape)
        self.obs_shape = (c, h, w)
        self.num_layers = num_layers
        self.num_filters = num_filters
        self.pixel_offset = float(pixel_offset)
        self.output_tanh = output_tanh
        self.conv_only = conv_only
        self.channels_last = channels_last
        self.compute_dtype = compute_dtype

        layers: list[nn.Module] = []
        for i in range(num_layers):
            layers.append(nn.Conv2d(c if i == 0 else num_filters, num_filters, 3, stride=2 if i == 0 else 1))
            layers.append(nn.ReLU(inplace=True))  # the conv output is not needed for backward
        self.convs = nn.Sequential(*layers)
        self.out_hw = (conv_output_size(h, num_layers), conv_output_size(w, num_layers))
        self.repr_dim = num_filters * self.out_hw[0] * self.out_hw[1]

        if conv_only:
            self.head = None
            self.feature_dim = None
            self.out_dim = self.repr_dim
        else:
            head: list[nn.Module] = [nn.Linear(self.repr_dim, feature_dim), nn.LayerNorm(feature_dim)]
            if output_tanh:
                head.append(nn.Tanh())
            self.head = nn.Sequential(*head)
            self.feature_dim = feature_dim
            self.out_dim = feature_dim

        init_weights(self, init)
        if channels_last:
            self.convs.to(memory_format=torch.channels_last)

    @property
    def memory_format(self) -> torch.memory_format:
        """The layout the convs run in: an augmentation that writes its output in it saves the
        encoder a conversion (crl.augment's ``memory_format``)."""
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def _prepare(self, obs: Tensor) -> Tensor:
        if obs.dim() != 4:
            raise ValueError(f"expected (B, C, H, W) pixels, got shape {tuple(obs.shape)}")
        # Convert the layout first (cheaper on uint8); the element-wise scaling keeps it.
        obs = obs.contiguous(memory_format=self.memory_format)
        if obs.is_floating_point():
            obs = obs.to(self.compute_dtype) / 255.0  # a new tensor: the caller's is not modified
        else:
            obs = obs.to(self.compute_dtype).div_(255.0)  # in place on the fresh copy
        if self.pixel_offset:
            obs.add_(self.pixel_offset)
        return obs

    def forward_conv(self, obs: Tensor) -> Tensor:
        """Scaled pixels -> convs -> flattened ``(B, repr_dim)`` features in ``C, H, W`` order
        (in ``compute_dtype``)."""
        with autocast_to(self.compute_dtype, obs):
            h = self.convs(self._prepare(obs))
        # flatten(1) on a channels_last tensor copies into (C, H, W) order: layout-independent.
        return _FlattenChannelsLast.apply(h) if self.channels_last else h.flatten(1)

    def forward(self, obs: Tensor, detach: bool = False) -> Tensor:
        """Features ``(B, out_dim)``. ``detach=True`` stops gradients at the conv output (the
        head still trains), as DrQ/CURL do for the actor's encoder."""
        h = self.forward_conv(obs)
        if detach:
            h = h.detach()
        return h if self.head is None else self.forward_head(h)

    def forward_head(self, h: Tensor) -> Tensor:
        """The head on flattened conv features (``forward_conv``'s output), in fp32."""
        with autocast_to(self.compute_dtype, h):
            return self.head(h).float()


class DrQV2Encoder(ConvEncoder):
    """DrQ-v2 encoder: the same convs, pixels ``obs / 255 - 0.5``, orthogonal init, output the
    flattened conv features (``repr_dim`` = 32 * 35 * 35 = 39200 for 84 x 84), no linear layer.
    Each network adds its own :class:`Trunk`."""

    def __init__(
        self,
        obs_shape: Sequence[int],
        *,
        num_layers: int = 4,
        num_filters: int = 32,
        init: str = "orthogonal",
        channels_last: bool = CHANNELS_LAST_DEFAULT,
        compute_dtype: torch.dtype = torch.float32,
    ):
        super().__init__(
            obs_shape,
            num_layers=num_layers,
            num_filters=num_filters,
            conv_only=True,
            pixel_offset=-0.5,
            init=init,
            channels_last=channels_last,
            compute_dtype=compute_dtype,
        )


class Trunk(nn.Sequential):
    """DrQ-v2's per-network trunk: Linear(repr_dim, feature_dim) -> LayerNorm -> tanh. bfloat16
    features (a bf16 encoder's) go through the Linear under bf16 autocast; the output is fp32."""

    def __init__(self, in_dim: int, feature_dim: int = 50, init: str = "orthogonal"):
        super().__init__(nn.Linear(in_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())
        init_weights(self, init)

    def forward(self, h: Tensor) -> Tensor:
        with autocast_to(h.dtype, h):
            return super().forward(h).float()


# --------------------------------------------------------------------------- MLP


class MLP(nn.Sequential):
    """Multi-layer perceptron: for each width in ``hidden_dims``: Linear -> [LayerNorm] ->
    activation; then Linear(out_dim) -> [output_activation].

    Args:
        in_dim, out_dim: input and output sizes.
        hidden_dims: widths of the hidden layers, e.g. ``(1024,) * 4``; empty gives one Linear.
        activation: name or module class (see :func:`make_activation`).
        layer_norm: LayerNorm after each hidden Linear, before the activation (Zheng et al.).
        output_activation: optional activation after the last Linear (e.g. ``"tanh"``).
        init: scheme for all Linear layers (see :func:`init_weights`).
        last_layer_scale: if given, the last Linear is re-initialised near zero with
            :func:`init_near_zero_` (``last_layer_mode`` ``"uniform"`` or ``"scaled"``).
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dims: Sequence[int],
        out_dim: int,
        *,
        activation: str | Callable[[], nn.Module] = "relu",
        layer_norm: bool = False,
        output_activation: str | Callable[[], nn.Module] | None = None,
        init: str = "orthogonal",
        last_layer_scale: float | None = None,
        last_layer_mode: str = "uniform",
    ):
        layers: list[nn.Module] = []
        d = in_dim
        for width in hidden_dims:
            layers.append(nn.Linear(d, width))
            if layer_norm:
                layers.append(nn.LayerNorm(width))
            layers.append(make_activation(activation))
            d = width
        layers.append(nn.Linear(d, out_dim))
        if output_activation is not None:
            layers.append(make_activation(output_activation))
        super().__init__(*layers)
        self.in_dim, self.out_dim = in_dim, out_dim
        init_weights(self, init)
        if last_layer_scale is not None:
            init_near_zero_(self.last_linear, last_layer_scale, last_layer_mode)

    @property
    def last_linear(self) -> nn.Linear:
        return [m for m in self if isinstance(m, nn.Linear)][-1]


class GoalInputs(nn.Module):
    """A goal task's state and goal as flat features for the MLPs of goal-conditioned agents.

    The observation space is a Dict with "observation" and "desired_goal" (crl's goal envs).
    Vectors pass through (flattened, float). Images (C, H, W) go through conv encoders, one for
    states and one for goals (the SAC-AE/DrQ encoder, 50-d head), with DrQ's pad-4 random shift
    when ``augment=True``. Zheng et al. 2023 found augmentation to matter for image goals (they
    crop observation and goal together for the BC term); the agents here shift the critic's
    inputs as DrQ does, each image independently: our choice, not theirs.

    ``goal_field`` names the observation field whose future values are the relabelled goals:
    "achieved_goal" when the env has one, else "observation" itself (pixel goals: the future
    image is the goal, and storing it twice would double the replay).
    """

    def __init__(self, obs_space, feature_dim: int = 50, shift_pad: int = 4):
        super().__init__()
        spaces = getattr(obs_space, "spaces", None)
        if not spaces or not {"observation", "desired_goal"} <= set(spaces):
            raise ValueError("goal-conditioned agents need a goal env (Dict observations with 'observation' "
                             f"and 'desired_goal', e.g. maze:PointMaze_UMaze-v3), got {obs_space}")
        self.goal_field = "achieved_goal" if "achieved_goal" in spaces else "observation"
        self.shift_pad = shift_pad
        self.state_encoder, self.state_dim = self._encoder(spaces["observation"].shape, feature_dim)
        self.goal_encoder, self.goal_dim = self._encoder(spaces["desired_goal"].shape, feature_dim)

    @staticmethod
    def _encoder(shape, feature_dim: int) -> tuple[nn.Module | None, int]:
        if len(shape) == 3:
            encoder = ConvEncoder(shape, feature_dim)
            return encoder, encoder.out_dim
        return None, int(math.prod(shape))

    def _features(self, encoder: nn.Module | None, x: Tensor, augment: bool) -> Tensor:
        if encoder is None:
            return x.float().flatten(1)
        if augment:
            x = random_shift(x, self.shift_pad)
        return encoder(x)

    def state(self, x: Tensor, augment: bool = False) -> Tensor:
        return self._features(self.state_encoder, x, augment)

    def goal(self, g: Tensor, augment: bool = False) -> Tensor:
        return self._features(self.goal_encoder, g, augment)
