"""Batched image augmentations that run on the tensor's own device.

Every function takes a batch ``x`` of shape ``(B, C, H, W)`` (a stacked observation keeps its
frames in the channel axis, so ``C = frames * channels``) and treats each sample independently.
Randomness comes from ``torch.randint`` on ``x.device``; pass a ``torch.Generator`` on that device
for reproducible draws.

Which augmentation each agent uses (see ALGORITHMS.md):

* DrQ: :func:`random_shift` -- replicate-pad 4, random crop back to ``H x W``; integer offsets,
  independent per sample and per axis.
* DrQ-v2: :func:`random_shift_bilinear` -- the same random integer shift expressed in
  ``grid_sample`` coordinates on the replicate-padded image, exactly as DrQ-v2's
  ``RandomShiftsAug`` (base grid + shift, ``align_corners=False``, ``padding_mode="zeros"``).
* CURL: :func:`random_crop` for training (e.g. 100 -> 84), :func:`center_crop` for evaluation;
  one crop per sample, shared by all channels/frames of that sample.

Dtype behaviour
---------------
* Integer-offset functions (:func:`crop`, :func:`shift`, :func:`random_shift`,
  :func:`random_crop`, :func:`center_crop`) only move pixels: the output has the input's dtype
  (uint8 stays uint8, float stays float) and the exact input values. They can therefore run on the
  uint8 batch straight out of the replay, before the float conversion, at a quarter of the memory
  traffic.
* The bilinear functions (:func:`shift_bilinear`, :func:`random_shift_bilinear`) need a floating
  tensor: a floating input keeps its dtype; an integer input (e.g. uint8) is converted to float32
  *without rescaling* (values stay in 0..255) and the result is float32.
* Outputs are always new tensors, contiguous unless ``memory_format`` asks for another layout
  (``torch.channels_last``: the layout the conv encoders run in, written directly instead of
  converted afterwards); the input is never modified.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "crop",
    "shift",
    "shift_bilinear",
    "random_shift",
    "random_shift_bilinear",
    "random_crop",
    "center_crop",
    "RandomShift",
    "RandomShiftsAug",
    "RandomCrop",
    "CenterCrop",
]


def _check_batch(x: Tensor) -> tuple[int, int, int, int]:
    if x.dim() != 4:
        raise ValueError(f"expected a (B, C, H, W) batch, got shape {tuple(x.shape)}")
    b, c, h, w = x.shape
    return b, c, h, w


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    size = tuple(int(s) for s in size)
    if len(size) != 2:
        raise ValueError(f"size must be an int or (height, width), got {size}")
    return size  # type: ignore[return-value]


def _offsets(x: Tensor, high: int, generator: torch.Generator | None) -> Tensor:
    """``B`` independent integer offsets uniform in ``[0, high]`` on ``x.device`` (int64)."""
    return torch.randint(0, high + 1, (x.shape[0],), device=x.device, generator=generator)


def _gather_rows_cols(x: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """out[b, c, i, j] = x[b, c, rows[b, i], cols[b, j]]; rows (B, h), cols (B, w), int64."""
    b, c, _, w_in = x.shape
    h, w = rows.shape[1], cols.shape[1]
    y = x.gather(2, rows[:, None, :, None].expand(b, c, h, w_in))
    return y.gather(3, cols[:, None, None, :].expand(b, c, h, w))


def _copies_per_sample(x: Tensor) -> bool:
    """Crop by one slice copy per sample (CPU), or by gathering (an accelerator, where two gather
    kernels beat B small copies)."""
    return x.device.type == "cpu"


def _windows(x: Tensor, top: Tensor, left: Tensor, size: tuple[int, int],
             memory_format: torch.memory_format) -> Tensor:
    """out[i] = x[i, :, top[i]:top[i]+h, left[i]:left[i]+w], offsets already checked in bounds."""
    b, c = x.shape[:2]
    h, w = size
    if not _copies_per_sample(x):
        rows = top[:, None] + torch.arange(h, device=x.device)
        cols = left[:, None] + torch.arange(w, device=x.device)
        return _gather_rows_cols(x, rows, cols).contiguous(memory_format=memory_format)
    # On CPU one slice copy per sample beats the gathers (256 x 9 x 84 x 84 uint8, 2 threads:
    # 4 ms vs 24 ms) and writes a channels_last output directly (10 ms; gathering then converting
    # the layout, 31 ms).
    out = torch.empty((b, c, h, w), dtype=x.dtype, memory_format=memory_format)
    for i, (row, col) in enumerate(zip(top.tolist(), left.tolist())):
        out[i] = x[i, :, row:row + h, col:col + w]
    return out


def _replicate_pad(x: Tensor, pad: int) -> Tensor:
    """``F.pad(x, (pad,) * 4, mode="replicate")`` for any dtype (F.pad refuses bool)."""
    b, c, H, W = x.shape
    out = x.new_empty((b, c, H + 2 * pad, W + 2 * pad))
    out[:, :, pad:pad + H, pad:pad + W] = x
    out[:, :, :pad, pad:pad + W] = x[:, :, :1]
    out[:, :, pad + H:, pad:pad + W] = x[:, :, -1:]
    out[:, :, :, :pad] = out[:, :, :, pad:pad + 1]
    out[:, :, :, pad + W:] = out[:, :, :, pad + W - 1:pad + W]
    return out


def _ranges(a: Tensor, b: Tensor) -> list[int]:
    """[min a, max a, min b, max b] in one read: on an accelerator each read waits for the queue."""
    return torch.stack([a.min(), a.max(), b.min(), b.max()]).tolist()


def crop(x: Tensor, top: Tensor, left: Tensor, size: int | Sequence[int], *,
         memory_format: torch.memory_format = torch.contiguous_format) -> Tensor:
    """Crop each sample ``i`` at its own offset: ``x[i, :, top[i]:top[i]+h, left[i]:left[i]+w]``.

    ``top`` and ``left`` are integer tensors of shape ``(B,)`` (any device-compatible int dtype);
    all channels of a sample share its crop. Raises if a crop would leave the image.
    Dtype preserved.
    """
    b, _, H, W = _check_batch(x)
    h, w = _pair(size)
    if h > H or w > W:
        raise ValueError(f"crop size {(h, w)} larger than image {(H, W)}")
    top = torch.as_tensor(top, device=x.device).long().reshape(b)
    left = torch.as_tensor(left, device=x.device).long().reshape(b)
    if b:
        top_min, top_max, left_min, left_max = _ranges(top, left)
        for name, low, high, limit in (("top", top_min, top_max, H - h), ("left", left_min, left_max, W - w)):
            if low < 0 or high > limit:
                raise ValueError(f"crop {name} offsets must lie in [0, {limit}] for a {(h, w)} crop of "
                                 f"{(H, W)} images, got {low}..{high}")
    return _windows(x, top, left, (h, w), memory_format)


def shift(x: Tensor, dy: Tensor, dx: Tensor, pad: int = 4, *,
          memory_format: torch.memory_format = torch.contiguous_format) -> Tensor:
    """Integer shift: replicate-pad by ``pad`` and crop ``H x W`` at offset ``(dy[i], dx[i])``.

    Offsets are in ``[0, 2*pad]`` (``pad`` means no shift), i.e.
    ``F.pad(x, (pad,)*4, mode="replicate")[i, :, dy:dy+H, dx:dx+W]``. Dtype preserved.
    """
    b, _, H, W = _check_batch(x)
    dy = torch.as_tensor(dy, device=x.device).long().reshape(b)
    dx = torch.as_tensor(dx, device=x.device).long().reshape(b)
    if b:  # the random shifts draw in-range offsets and skip this check
        low_y, high_y, low_x, high_x = _ranges(dy, dx)
        if min(low_y, low_x) < 0 or max(high_y, high_x) > 2 * pad:
            raise ValueError(f"shift offsets must lie in [0, {2 * pad}] for pad {pad}, got dy "
                             f"{low_y}..{high_y}, dx {low_x}..{high_x}")
    return _shift(x, dy, dx, pad, memory_format)


def _shift(x: Tensor, dy: Tensor, dx: Tensor, pad: int, memory_format: torch.memory_format) -> Tensor:
    """`shift` of offsets known to be in range (long tensors of shape (B,))."""
    _, _, H, W = x.shape
    if not _copies_per_sample(x):  # clamped indices: no padded copy
        rows = (dy[:, None] + torch.arange(-pad, H - pad, device=x.device)).clamp_(0, H - 1)
        cols = (dx[:, None] + torch.arange(-pad, W - pad, device=x.device)).clamp_(0, W - 1)
        return _gather_rows_cols(x, rows, cols).contiguous(memory_format=memory_format)
    return _windows(_replicate_pad(x, pad), dy, dx, (H, W), memory_format)


def random_shift(x: Tensor, pad: int = 4, *, generator: torch.Generator | None = None,
                 memory_format: torch.memory_format = torch.contiguous_format) -> Tensor:
    """DrQ random shift: replicate-pad ``pad``, random ``H x W`` crop, independent per sample.

    Vertical and horizontal offsets are drawn independently, uniform over ``[0, 2*pad]``.
    Dtype preserved (uint8 in, uint8 out).
    """
    _check_batch(x)
    dy = _offsets(x, 2 * pad, generator)
    dx = _offsets(x, 2 * pad, generator)
    return _shift(x, dy, dx, pad, memory_format)


def shift_bilinear(x: Tensor, dy: Tensor, dx: Tensor, pad: int = 4) -> Tensor:
    """DrQ-v2's shift with given per-sample integer offsets ``dy, dx`` in ``[0, 2*pad]``.

    Replicate-pads, then samples the padded image with ``F.grid_sample`` at a base grid of the
    first ``H x W`` pixel centres plus ``2 * offset / padded_size`` (``align_corners=False``,
    ``padding_mode="zeros"``). With integer offsets every grid point is a pixel centre, so the
    result equals :func:`shift` up to float rounding. ``dy``/``dx`` may also be fractional.

    Integer inputs are converted to float32 (not rescaled); floating inputs keep their dtype.
    Unlike DrQ-v2 (which asserts H == W) non-square images are allowed; for square ones the grid
    is computed with exactly DrQ-v2's operations.
    """
    b, _, H, W = _check_batch(x)
    if not x.is_floating_point():
        x = x.float()
    x = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    hp, wp = H + 2 * pad, W + 2 * pad
    eps_y, eps_x = 1.0 / hp, 1.0 / wp
    ys = torch.linspace(-1.0 + eps_y, 1.0 - eps_y, hp, device=x.device, dtype=x.dtype)[:H]
    xs = torch.linspace(-1.0 + eps_x, 1.0 - eps_x, wp, device=x.device, dtype=x.dtype)[:W]
    # grid[..., 0] is the x (column) coordinate, grid[..., 1] the y (row) coordinate.
    base = torch.stack(
        [xs[None, :].expand(H, W), ys[:, None].expand(H, W)], dim=-1
    )  # (H, W, 2)
    sx = torch.as_tensor(dx, device=x.device).to(x.dtype).reshape(b) * (2.0 / wp)
    sy = torch.as_tensor(dy, device=x.device).to(x.dtype).reshape(b) * (2.0 / hp)
    grid = base[None] + torch.stack([sx, sy], dim=-1)[:, None, None, :]
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_shift_bilinear(
    x: Tensor, pad: int = 4, *, generator: torch.Generator | None = None, float_output: bool = True,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> Tensor:
    """DrQ-v2 ``RandomShiftsAug``: one random integer shift in ``[0, 2*pad]`` per sample and axis,
    applied by bilinear ``grid_sample`` on the replicate-padded image (see :func:`shift_bilinear`).

    Returns float: float32 for integer inputs (values not rescaled), else the input dtype;
    ``float_output=False`` keeps the input dtype (the same values: an encoder that scales uint8
    pixels itself then converts a quarter of the bytes to its memory layout).

    The shifts are whole pixels, so every sample point of the bilinear grid is a pixel centre and
    its weights are one-hot: the result is exactly the integer crop of :func:`shift`. We compute
    it that way, on the input dtype before the float conversion (3x cheaper than padding and
    grid-sampling floats; tests/test_augment.py checks it against :func:`shift_bilinear`).
    """
    _check_batch(x)
    # DrQ-v2 draws shift of size (n, 1, 1, 2) with [..., 0] = x; draw x first to match.
    sh = torch.randint(0, 2 * pad + 1, (x.shape[0], 2), device=x.device, generator=generator)
    out = _shift(x, sh[:, 1], sh[:, 0], pad, memory_format)
    return out if out.is_floating_point() or not float_output else out.float()


def random_crop(
    x: Tensor, size: int | Sequence[int] = 84, *, generator: torch.Generator | None = None,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> Tensor:
    """CURL random crop to ``size``: offsets uniform in ``[0, H-h] x [0, W-w]``, independent per
    sample, the same crop for all channels/frames of one sample. Dtype preserved.

    Deviation: CURL's release draws ``randint(0, H - h)``, i.e. ``[0, H-h)`` (0..15 for 100 -> 84,
    never the last row/column); we include ``H-h``, so the range is symmetric about the centre
    crop (offset 8) that evaluation uses."""
    _, _, H, W = _check_batch(x)
    h, w = _pair(size)
    if h > H or w > W:
        raise ValueError(f"crop size {(h, w)} larger than image {(H, W)}")
    top = _offsets(x, H - h, generator)
    left = _offsets(x, W - w, generator)
    return _windows(x, top, left, (h, w), memory_format)  # in range by construction: no check (a GPU sync)


def center_crop(x: Tensor, size: int | Sequence[int] = 84) -> Tensor:
    """CURL evaluation crop: ``top = (H - h) // 2``, ``left = (W - w) // 2`` (as CURL's
    ``center_crop_image``). Dtype preserved; returns a contiguous copy."""
    _, _, H, W = _check_batch(x)
    h, w = _pair(size)
    if h > H or w > W:
        raise ValueError(f"crop size {(h, w)} larger than image {(H, W)}")
    top, left = (H - h) // 2, (W - w) // 2
    return x[:, :, top : top + h, left : left + w].contiguous()


class RandomShift(nn.Module):
    """Module form of :func:`random_shift` (DrQ). Dtype preserved."""

    def __init__(self, pad: int = 4):
        super().__init__()
        self.pad = pad

    def forward(self, x: Tensor) -> Tensor:
        return random_shift(x, self.pad)

    def extra_repr(self) -> str:
        return f"pad={self.pad}"


class RandomShiftsAug(nn.Module):
    """Module form of :func:`random_shift_bilinear`, named as in DrQ-v2. Float output."""

    def __init__(self, pad: int = 4):
        super().__init__()
        self.pad = pad

    def forward(self, x: Tensor) -> Tensor:
        return random_shift_bilinear(x, self.pad)

    def extra_repr(self) -> str:
        return f"pad={self.pad}"


class RandomCrop(nn.Module):
    """Module form of :func:`random_crop` (CURL training). Dtype preserved."""

    def __init__(self, size: int | Sequence[int] = 84):
        super().__init__()
        self.size = _pair(size)

    def forward(self, x: Tensor) -> Tensor:
        return random_crop(x, self.size)

    def extra_repr(self) -> str:
        return f"size={self.size}"


class CenterCrop(nn.Module):
    """Module form of :func:`center_crop` (CURL evaluation). Dtype preserved."""

    def __init__(self, size: int | Sequence[int] = 84):
        super().__init__()
        self.size = _pair(size)

    def forward(self, x: Tensor) -> Tensor:
        return center_crop(x, self.size)

    def extra_repr(self) -> str:
        return f"size={self.size}"
