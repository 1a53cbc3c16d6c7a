"""Tests for crl.augment: shifts are translations of the padded image, crops share one offset per
sample across channels, offsets are independent across samples, dtypes behave as documented."""

import pytest
import torch
import torch.nn.functional as F

from crl import augment as A


def _rand_images(b, c, h, w, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, c, h, w, generator=g) * 255
    return x.to(torch.uint8) if dtype == torch.uint8 else x.to(dtype)


def _recover_offsets(out, src, max_off, atol=0.0):
    """For every (sample, channel) find the unique (dy, dx) in [0, max_off]^2 with
    out[b, c] == src[b, c, dy:dy+h, dx:dx+w] (within atol). Returns (B, C, 2) int64.

    Candidates are screened on a 3x3 patch at the output's centre (inside the unpadded image for
    any shift, so unique for random content), then the whole image is checked at the winner."""
    b, c, h, w = out.shape
    out, src = out.double(), src.double()
    cy, cx = h // 2, w // 2
    patch = out[:, :, cy : cy + 3, cx : cx + 3]
    found = torch.full((b, c, 2), -1, dtype=torch.long)
    count = torch.zeros(b, c, dtype=torch.long)
    for dy in range(max_off + 1):
        for dx in range(max_off + 1):
            cand = src[:, :, dy + cy : dy + cy + 3, dx + cx : dx + cx + 3]
            match = ((patch - cand).abs() <= atol).flatten(2).all(-1)  # (B, C)
            found[match] = torch.tensor([dy, dx])
            count += match.long()
    assert (count == 1).all(), f"each output must match exactly one crop, counts {count.unique()}"
    windows = src.unfold(2, h, 1).unfold(3, w, 1)  # (B, C, nh, nw, h, w) view
    bi = torch.arange(b)[:, None].expand(b, c)
    ci = torch.arange(c)[None, :].expand(b, c)
    full = windows[bi, ci, found[..., 0], found[..., 1]]
    assert ((out - full).abs() <= atol).all(), "output is not a crop of the source"
    return found


def _padded(x, pad):
    return F.pad(x.float(), (pad, pad, pad, pad), mode="replicate")


def _drqv2_reference(x, shift, pad):
    """DrQ-v2's RandomShiftsAug.forward with the random draw replaced by ``shift`` (n, 2), x first."""
    n, c, h, w = x.size()
    assert h == w
    x = F.pad(x, (pad,) * 4, "replicate")
    eps = 1.0 / (h + 2 * pad)
    arange = torch.linspace(-1.0 + eps, 1.0 - eps, h + 2 * pad, device=x.device, dtype=x.dtype)[:h]
    arange = arange.unsqueeze(0).repeat(h, 1).unsqueeze(2)
    base_grid = torch.cat([arange, arange.transpose(1, 0)], dim=2)
    base_grid = base_grid.unsqueeze(0).repeat(n, 1, 1, 1)
    s = shift.to(x.dtype).reshape(n, 1, 1, 2).clone()
    s *= 2.0 / (h + 2 * pad)
    grid = base_grid + s
    return F.grid_sample(x, grid, padding_mode="zeros", align_corners=False)


# ----------------------------------------------------------------------------- integer shift


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_shift_equals_padded_crop(dtype):
    x = _rand_images(6, 3, 12, 10, dtype)
    pad = 4
    dy = torch.tensor([0, 8, 4, 1, 7, 3])
    dx = torch.tensor([8, 0, 4, 6, 2, 5])
    y = A.shift(x, dy, dx, pad)
    assert y.dtype == dtype and y.shape == x.shape
    p = _padded(x, pad)
    for i in range(6):
        ref = p[i, :, dy[i] : dy[i] + 12, dx[i] : dx[i] + 10]
        assert torch.equal(y[i].float(), ref)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_random_shift_is_translation_of_padded_image(dtype):
    pad = 4
    x = _rand_images(32, 9, 20, 20, dtype)
    x_before = x.clone()
    y = A.random_shift(x, pad)
    assert torch.equal(x, x_before), "input must not be modified"
    assert y.dtype == dtype and y.shape == x.shape and y.is_contiguous()
    offs = _recover_offsets(y, _padded(x, pad), 2 * pad)
    assert ((offs >= 0) & (offs <= 2 * pad)).all()
    # all channels (frames) of one sample share the shift
    assert (offs == offs[:, :1]).all()


def test_random_shift_84_uint8_shape():
    x = _rand_images(8, 9, 84, 84, torch.uint8)
    y = A.RandomShift(4)(x)
    assert y.shape == (8, 9, 84, 84) and y.dtype == torch.uint8
    offs = _recover_offsets(y, _padded(x, 4), 8)
    assert (offs == offs[:, :1]).all()


def _offset_statistics(offs, max_off):
    # offs: (B, 2) per-sample offsets. Uniform over [0, max_off]^2 and independent per sample.
    b = offs.shape[0]
    for axis in range(2):
        counts = torch.bincount(offs[:, axis], minlength=max_off + 1).double()
        assert counts.numel() == max_off + 1
        expected = b / (max_off + 1)
        chi2 = ((counts - expected) ** 2 / expected).sum().item()
        # df = max_off; a loose bound (p ~ 1e-6 for df 8..16) keeps the test from flaking.
        assert chi2 < 60, f"axis {axis} counts {counts.tolist()}"
    pairs = offs[:, 0] * (max_off + 1) + offs[:, 1]
    assert pairs.unique().numel() > 0.6 * (max_off + 1) ** 2
    # vertical and horizontal offsets are not tied to each other
    assert (offs[:, 0] != offs[:, 1]).float().mean() > 0.7


def test_random_shift_offsets_differ_across_samples():
    pad = 4
    x = _rand_images(512, 2, 10, 10, torch.float32, seed=1)
    y = A.random_shift(x, pad, generator=torch.Generator().manual_seed(3))
    offs = _recover_offsets(y, _padded(x, pad), 2 * pad)[:, 0]
    _offset_statistics(offs, 2 * pad)


def test_random_shift_generator_reproducible():
    x = _rand_images(16, 3, 20, 20, torch.uint8)
    a = A.random_shift(x, generator=torch.Generator().manual_seed(7))
    b = A.random_shift(x, generator=torch.Generator().manual_seed(7))
    c = A.random_shift(x, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


# ----------------------------------------------------------------------------- bilinear shift


@pytest.mark.parametrize("height, width", [(84, 84), (20, 31), (31, 20)])
def test_shift_bilinear_matches_integer_crop_all_offsets(height, width):
    pad = 4
    x = _rand_images(81, 3, height, width, torch.float32)
    grid = torch.cartesian_prod(torch.arange(9), torch.arange(9))
    dy, dx = grid[:, 0], grid[:, 1]
    y = A.shift_bilinear(x, dy, dx, pad)
    ref = A.shift(x, dy, dx, pad)
    assert y.dtype == torch.float32
    # 0..255 values: float rounding of the grid gives errors ~3e-3; a wrong shift gives ~100.
    torch.testing.assert_close(y, ref, atol=1e-2, rtol=0)


def test_shift_bilinear_matches_drqv2_reference():
    pad = 4
    x = _rand_images(16, 9, 84, 84, torch.float32)
    shift_xy = torch.randint(0, 2 * pad + 1, (16, 2), generator=torch.Generator().manual_seed(0))
    ref = _drqv2_reference(x, shift_xy, pad)
    y = A.shift_bilinear(x, shift_xy[:, 1], shift_xy[:, 0], pad)
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=0)


def test_random_shift_bilinear_is_translation_and_shared_across_channels():
    pad = 4
    x = _rand_images(48, 9, 20, 20, torch.float32)
    y = A.RandomShiftsAug(pad)(x)
    assert y.shape == x.shape and y.dtype == torch.float32
    offs = _recover_offsets(y, _padded(x, pad), 2 * pad, atol=1e-2)
    assert (offs == offs[:, :1]).all()


def test_random_shift_bilinear_uint8_gives_unscaled_float32():
    x = _rand_images(8, 3, 16, 16, torch.uint8)
    y = A.random_shift_bilinear(x)
    assert y.dtype == torch.float32
    assert y.max() > 100  # not rescaled to [0, 1]
    offs = _recover_offsets(y, _padded(x, 4), 8, atol=1e-2)
    assert (offs == offs[:, :1]).all()


def test_random_shift_bilinear_can_keep_uint8_with_the_same_values():
    x = _rand_images(8, 3, 16, 16, torch.uint8)
    as_float = A.random_shift_bilinear(x, generator=torch.Generator().manual_seed(2))
    as_uint8 = A.random_shift_bilinear(x, generator=torch.Generator().manual_seed(2), float_output=False)
    assert as_uint8.dtype == torch.uint8
    assert torch.equal(as_uint8.float(), as_float)


def test_random_shift_bilinear_offsets_differ_across_samples():
    pad = 4
    x = _rand_images(512, 1, 10, 10, torch.float32, seed=2)
    y = A.random_shift_bilinear(x, pad, generator=torch.Generator().manual_seed(5))
    offs = _recover_offsets(y, _padded(x, pad), 2 * pad, atol=1e-2)[:, 0]
    _offset_statistics(offs, 2 * pad)


def test_random_shift_bilinear_keeps_float64():
    x = _rand_images(4, 3, 12, 12, torch.float64)
    assert A.random_shift_bilinear(x).dtype == torch.float64


# ----------------------------------------------------------------------------- crops


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_random_crop_in_bounds_shape_and_shared_offsets(dtype):
    x = _rand_images(24, 9, 100, 100, dtype)
    y = A.random_crop(x, 84)
    assert y.shape == (24, 9, 84, 84) and y.dtype == dtype and y.is_contiguous()
    offs = _recover_offsets(y, x, 16)  # every crop lies inside the 100x100 image
    assert (offs == offs[:, :1]).all(), "all frames of one observation share one crop"


def test_random_crop_offsets_differ_across_samples():
    x = _rand_images(1024, 1, 24, 24, torch.float32, seed=4)
    y = A.RandomCrop(8)(x)
    offs = _recover_offsets(y, x, 16)[:, 0]
    _offset_statistics(offs, 16)


def test_random_crop_rectangular_and_errors():
    x = _rand_images(5, 2, 30, 40, torch.float32)
    y = A.random_crop(x, (20, 25))
    assert y.shape == (5, 2, 20, 25)
    with pytest.raises(ValueError):
        A.random_crop(x, 31)
    with pytest.raises(ValueError):
        A.crop(x, torch.zeros(5), torch.zeros(5), (20, 41))
    with pytest.raises(ValueError):
        A.random_shift(x[0])  # not a batch


def test_crop_at_given_offsets():
    x = _rand_images(3, 4, 20, 20, torch.uint8)
    top, left = torch.tensor([0, 5, 12]), torch.tensor([12, 3, 0])
    y = A.crop(x, top, left, 8)
    for i in range(3):
        assert torch.equal(y[i], x[i, :, top[i] : top[i] + 8, left[i] : left[i] + 8])


def test_center_crop_exact():
    x = _rand_images(4, 9, 100, 100, torch.uint8)
    y = A.center_crop(x, 84)
    assert y.dtype == torch.uint8 and torch.equal(y, x[:, :, 8:92, 8:92])
    assert torch.equal(A.CenterCrop(84)(x), y)
    z = _rand_images(2, 3, 85, 87, torch.float32)
    assert torch.equal(A.center_crop(z, 84), z[:, :, 0:84, 1:85])
    assert torch.equal(A.center_crop(z, (85, 87)), z)


def test_random_shift_bilinear_equals_grid_sample_at_the_drawn_shifts():
    """The integer-crop implementation is exactly DrQ-v2's grid_sample at the same shifts."""
    x = torch.randint(0, 256, (16, 9, 84, 84), dtype=torch.uint8)
    y = A.random_shift_bilinear(x, 4, generator=torch.Generator().manual_seed(3))
    sh = torch.randint(0, 9, (16, 2), generator=torch.Generator().manual_seed(3))
    expected = A.shift_bilinear(x, sh[:, 1], sh[:, 0], 4)
    # grid_sample leaks float-rounding weight (< 0.01 of 255) to neighbouring pixels
    torch.testing.assert_close(y, expected, atol=1e-2, rtol=0)


# ----------------------------------------------------------------------------- output layout


@pytest.mark.parametrize("name", ["random_shift", "random_shift_bilinear", "random_crop"])
def test_channels_last_output_holds_the_same_draw_and_values(name):
    x = _rand_images(16, 9, 24, 24, torch.uint8)
    kwargs = {"size": 20} if name == "random_crop" else {}
    plain = getattr(A, name)(x, generator=torch.Generator().manual_seed(3), **kwargs)
    cl = getattr(A, name)(x, generator=torch.Generator().manual_seed(3), memory_format=torch.channels_last, **kwargs)
    assert plain.is_contiguous() and cl.is_contiguous(memory_format=torch.channels_last)
    assert cl.dtype == plain.dtype and torch.equal(cl, plain)


def test_crop_refuses_offsets_that_leave_the_image():
    x = _rand_images(3, 2, 30, 40, torch.uint8)
    with pytest.raises(ValueError, match=r"top offsets must lie in \[0, 10\].*got 0\.\.11"):
        A.crop(x, torch.tensor([0, 11, 2]), torch.zeros(3), 20)
    with pytest.raises(ValueError, match=r"left offsets must lie in \[0, 20\].*got -1\.\.0"):
        A.crop(x, torch.zeros(3), torch.tensor([0, -1, 0]), 20)


@pytest.mark.parametrize("gather", [False, True])
def test_shift_refuses_offsets_outside_the_padding_on_every_path(gather, monkeypatch):
    if gather:  # the accelerator path (clamped gather indices) would clamp them silently
        monkeypatch.setattr(A, "_copies_per_sample", lambda x: False)
    x = _rand_images(3, 2, 10, 12, torch.uint8)
    with pytest.raises(ValueError, match=r"offsets must lie in \[0, 8\] for pad 4, got dy 0\.\.9"):
        A.shift(x, torch.tensor([0, 9, 2]), torch.zeros(3), 4)
    with pytest.raises(ValueError, match=r"got dy 0\.\.0, dx -3\.\.0"):
        A.shift(x, torch.zeros(3), torch.tensor([0, -3, 0]), 4)


def test_shift_of_a_bool_mask_replicates_its_border():
    x = torch.rand(4, 1, 10, 12, generator=torch.Generator().manual_seed(0)) > 0.5
    dy, dx = torch.tensor([0, 8, 4, 2]), torch.tensor([8, 0, 4, 5])
    y = A.shift(x, dy, dx, pad=4)
    padded = _padded(x, 4).bool()
    assert y.dtype == torch.bool
    for i in range(4):
        assert torch.equal(y[i], padded[i, :, dy[i]:dy[i] + 10, dx[i]:dx[i] + 12])


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_the_accelerators_gather_path_crops_and_shifts_as_the_cpu_path(monkeypatch, memory_format):
    x = _rand_images(8, 3, 16, 20, torch.uint8)
    top, left = torch.randint(0, 5, (8,)), torch.randint(0, 7, (8,))
    dy, dx = torch.randint(0, 9, (8,)), torch.randint(0, 9, (8,))
    copied = A.crop(x, top, left, (12, 14)), A.shift(x, dy, dx, 4)
    monkeypatch.setattr(A, "_copies_per_sample", lambda x: False)
    gathered = A.crop(x, top, left, (12, 14), memory_format=memory_format), A.shift(x, dy, dx, 4, memory_format=memory_format)
    for a, b in zip(copied, gathered):
        assert torch.equal(a, b) and b.is_contiguous(memory_format=memory_format)
