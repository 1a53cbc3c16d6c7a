"""Tests for crl.encoders: shapes, pixel scaling, init schemes, gradients, channels_last."""

import copy
import math

import pytest
import torch
from torch import nn

from crl import encoders as E


def _pixels(b=3, shape=(9, 84, 84), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, *shape), generator=g, dtype=torch.uint8)


def _is_orthogonal(w, gain=1.0, tol=1e-4):
    """W viewed as (out, rest): W W^T = gain^2 I if out <= rest else W^T W = gain^2 I."""
    m = w.detach().reshape(w.shape[0], -1).double()
    gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    eye = torch.eye(gram.shape[0], dtype=torch.float64) * gain**2
    return torch.allclose(gram, eye, atol=tol * gain**2 * 10, rtol=0)


def _convs(enc):
    return [m for m in enc.convs if isinstance(m, nn.Conv2d)]


# ----------------------------------------------------------------------------- shapes


def test_conv_output_size():
    assert E.conv_output_size(84) == 35
    assert E.conv_output_size(100) == 43
    assert E.conv_output_size(64) == 25


def test_conv_encoder_shapes_and_tanh():
    enc = E.ConvEncoder((9, 84, 84), 50)
    x = _pixels()
    out = enc(x)
    assert out.shape == (3, 50) and enc.out_dim == 50 and enc.repr_dim == 32 * 35 * 35
    assert (out.abs() < 1).all()
    assert isinstance(enc.head[-1], nn.Tanh)
    conv_map = enc.convs(x.float() / 255)
    assert conv_map.shape == (3, 32, 35, 35)
    assert enc.forward_conv(x).shape == (3, 32 * 35 * 35)


def test_conv_encoder_without_tanh_is_layernorm_output():
    enc = E.ConvEncoder((9, 84, 84), 50, output_tanh=False)
    assert [type(m) for m in enc.head] == [nn.Linear, nn.LayerNorm]
    x = _pixels()
    out = enc(x)
    pre = enc.head[0](enc.forward_conv(x))
    ref = torch.nn.functional.layer_norm(pre, (50,), enc.head[1].weight, enc.head[1].bias)
    torch.testing.assert_close(out, ref)
    assert out.abs().max() > 1  # no tanh squashing


def test_conv_only_and_drqv2_encoder():
    enc = E.ConvEncoder((9, 84, 84), conv_only=True)
    assert enc.head is None and enc(_pixels()).shape == (3, 39200)
    d = E.DrQV2Encoder((9, 84, 84))
    assert d.repr_dim == 39200 == d.out_dim
    x = _pixels()
    h = d(x)
    assert h.shape == (3, 39200)
    # DrQ-v2 pixel scaling x / 255 - 0.5, flatten in (C, H, W) order
    ref = d.convs((x.float() / 255 - 0.5).contiguous()).reshape(3, -1)
    torch.testing.assert_close(h, ref, atol=1e-5, rtol=1e-5)
    trunk = E.Trunk(d.repr_dim, 50)
    f = trunk(h)
    assert f.shape == (3, 50) and (f.abs() < 1).all()
    assert [type(m) for m in trunk] == [nn.Linear, nn.LayerNorm, nn.Tanh]


def test_conv_encoder_scales_pixels_by_255():
    enc = E.ConvEncoder((3, 32, 32), 8, channels_last=False)
    x = _pixels(2, (3, 32, 32))
    ref = enc.head(enc.convs(x.float() / 255).flatten(1))
    torch.testing.assert_close(enc(x), ref)
    torch.testing.assert_close(enc(x.float()), ref)  # float input 0..255 is treated the same
    with pytest.raises(ValueError):
        enc(x[0])


def test_other_image_sizes():
    enc = E.ConvEncoder((3, 100, 100), 16)
    assert enc(_pixels(2, (3, 100, 100))).shape == (2, 16)
    assert enc.repr_dim == 32 * 43 * 43
    wide = E.ConvEncoder((3, 84, 100), 16)  # non-square: rows and columns counted apart
    assert wide.out_hw == (35, 43) and wide.repr_dim == 32 * 35 * 43
    assert wide(_pixels(2, (3, 84, 100))).shape == (2, 16)


def test_conv_flops_about_85_mflop():
    flops = E.conv_flops((9, 84, 84))
    assert flops[0] == 2 * 41 * 41 * 32 * 9 * 9
    assert 84e6 < sum(flops) < 86e6


# ----------------------------------------------------------------------------- init schemes


@pytest.mark.parametrize("channels_last", [True, False])
def test_orthogonal_init(channels_last):
    enc = E.ConvEncoder((9, 84, 84), 50, init="orthogonal", channels_last=channels_last)
    for conv in _convs(enc):
        assert _is_orthogonal(conv.weight, gain=math.sqrt(2))  # (32, 81) and (32, 288)
        assert (conv.bias == 0).all()
    fc = enc.head[0]
    assert _is_orthogonal(fc.weight, gain=1.0)  # (50, 39200): W W^T = I
    assert (fc.bias == 0).all()
    assert (enc.head[1].weight == 1).all() and (enc.head[1].bias == 0).all()  # LayerNorm untouched
    mlp = E.MLP(50, (256,), 4, init="orthogonal")
    assert _is_orthogonal(mlp[0].weight)  # (256, 50): W^T W = I
    assert _is_orthogonal(mlp[-1].weight)  # (4, 256): W W^T = I
    # re-initialising a channels_last encoder in place works and keeps its layout
    E.init_weights(enc, "orthogonal")
    assert _is_orthogonal(_convs(enc)[1].weight, gain=math.sqrt(2))
    if channels_last:
        assert _convs(enc)[1].weight.is_contiguous(memory_format=torch.channels_last)


def test_not_orthogonal_detected():
    # the checker itself must reject a default-initialised layer
    assert not _is_orthogonal(nn.Linear(50, 256).weight)


def test_delta_orthogonal_init():
    enc = E.ConvEncoder((9, 84, 84), 50, init="delta_orthogonal")
    for conv in _convs(enc):
        w = conv.weight.detach()
        mask = torch.ones(3, 3, dtype=torch.bool)
        mask[1, 1] = False
        assert (w[:, :, mask] == 0).all()
        assert _is_orthogonal(w[:, :, 1, 1], gain=math.sqrt(2))  # (32, 9): W^T W = 2 I
    assert _is_orthogonal(enc.head[0].weight)


def test_xavier_uniform_init():
    mlp = E.MLP(300, (500,), 10, init="xavier_uniform")
    w = mlp[0].weight.detach()
    bound = math.sqrt(6 / (300 + 500))
    assert w.abs().max() <= bound and w.abs().max() > 0.99 * bound
    assert abs(w.std().item() - bound / math.sqrt(3)) < 0.02 * bound
    assert (mlp[0].bias == 0).all()


def test_default_init_and_unknown_scheme():
    torch.manual_seed(0)
    a = nn.Linear(4, 4)
    torch.manual_seed(0)
    b = E.init_weights(nn.Linear(4, 4), "default")
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    with pytest.raises(ValueError):
        E.init_weights(nn.Linear(4, 4), "kaiming")


def test_near_zero_last_layer():
    mlp = E.MLP(16, (64, 64), 1, last_layer_scale=1e-4)
    w = mlp.last_linear.weight.detach()
    assert w.abs().max() <= 1e-4 and w.abs().max() > 0
    assert (mlp.last_linear.bias == 0).all()
    assert _is_orthogonal(mlp[0].weight)  # other layers keep the scheme
    lin = E.orthogonal_init_(nn.Linear(8, 3))
    before = lin.weight.detach().clone()
    E.init_near_zero_(lin, 1e-3, mode="scaled")
    torch.testing.assert_close(lin.weight.detach(), before * 1e-3)
    with pytest.raises(ValueError):
        E.init_near_zero_(lin, mode="zero")


# ----------------------------------------------------------------------------- MLP


def test_mlp_structure():
    mlp = E.MLP(10, (32, 32), 3, activation="elu", layer_norm=True, output_activation="tanh")
    assert [type(m) for m in mlp] == [
        nn.Linear, nn.LayerNorm, nn.ELU, nn.Linear, nn.LayerNorm, nn.ELU, nn.Linear, nn.Tanh
    ]
    y = mlp(torch.randn(5, 10))
    assert y.shape == (5, 3) and (y.abs() < 1).all()
    plain = E.MLP(10, (), 3)
    assert [type(m) for m in plain] == [nn.Linear]
    custom = E.MLP(10, (8,), 3, activation=nn.SiLU)
    assert isinstance(custom[1], nn.SiLU)
    with pytest.raises(ValueError):
        E.MLP(10, (8,), 3, activation="nope")


# ----------------------------------------------------------------------------- gradients


def test_gradients_reach_every_parameter():
    enc = E.ConvEncoder((9, 84, 84), 50)
    mlp = E.MLP(50, (32,), 1, layer_norm=True)
    loss = mlp(enc(_pixels(4))).pow(2).sum()
    loss.backward()
    for name, p in list(enc.named_parameters()) + list(mlp.named_parameters()):
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_detach_stops_gradient_at_conv_output():
    enc = E.ConvEncoder((9, 84, 84), 50)
    enc(_pixels(2), detach=True).sum().backward()
    assert all(c.weight.grad is None for c in _convs(enc))
    assert enc.head[0].weight.grad is not None and enc.head[0].weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- channels_last


@pytest.mark.parametrize("cls", ["conv", "drqv2"])
def test_channels_last_matches_contiguous(cls):
    torch.manual_seed(0)
    if cls == "conv":
        a = E.ConvEncoder((9, 84, 84), 50, channels_last=True)
        b = E.ConvEncoder((9, 84, 84), 50, channels_last=False)
    else:
        a = E.DrQV2Encoder((9, 84, 84), channels_last=True)
        b = E.DrQV2Encoder((9, 84, 84), channels_last=False)
    assert _convs(a)[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert _convs(b)[0].weight.is_contiguous()
    b.load_state_dict(a.state_dict())  # state_dicts interchangeable
    x = _pixels(4)
    ya, yb = a(x), b(x)
    torch.testing.assert_close(ya, yb, atol=1e-5, rtol=1e-4)
    g = torch.randn_like(ya)
    (ya * g).sum().backward()
    (yb * g).sum().backward()
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, atol=1e-4, rtol=1e-3, msg=n)
    # a deep copy (e.g. a target network) keeps working
    c = copy.deepcopy(a)
    torch.testing.assert_close(c(x), ya)


# ----------------------------------------------------------------------------- precision


def _conv_output_dtypes(enc):
    dtypes = []
    for conv in _convs(enc):
        conv.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    return dtypes


@pytest.mark.parametrize("cls", ["conv", "drqv2"])
def test_bfloat16_encoder_runs_convs_in_bf16_close_to_fp32(cls):
    torch.manual_seed(0)
    if cls == "conv":
        a, b = (E.ConvEncoder((9, 84, 84), 50, compute_dtype=dt) for dt in (torch.float32, torch.bfloat16))
        readout = nn.Identity()
    else:
        a, b = (E.DrQV2Encoder((9, 84, 84), compute_dtype=dt) for dt in (torch.float32, torch.bfloat16))
        readout = E.Trunk(a.repr_dim, 50)
    b.load_state_dict(a.state_dict())
    dtypes = _conv_output_dtypes(b)
    x = _pixels(4)
    raw = b(x)
    assert dtypes == [torch.bfloat16] * 4  # the option is not a no-op
    assert raw.dtype == (torch.float32 if cls == "conv" else torch.bfloat16)  # conv_only: bf16 features
    ya, yb = readout(a(x)), readout(raw)
    assert ya.dtype == yb.dtype == torch.float32
    assert (yb - ya).norm() / ya.norm() < 0.03  # bf16 keeps 8 significant bits
    g = torch.randn_like(ya)
    (ya * g).sum().backward()
    (yb * g).sum().backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert pb.dtype == pb.grad.dtype == torch.float32, name  # fp32 weights and gradients
        cosine = torch.nn.functional.cosine_similarity(pa.grad.flatten(), pb.grad.flatten(), dim=0)
        assert cosine > 0.98, name


def test_bf16_speed_probe_measures_without_touching_the_random_state(monkeypatch):
    E.cpu_bf16_conv_speedup.cache_clear()
    monkeypatch.setattr(E, "cpu_has_bf16_units", lambda: False)
    assert E.cpu_bf16_conv_speedup() == 0.0  # emulated bf16: never picked, never timed
    E.cpu_bf16_conv_speedup.cache_clear()
    monkeypatch.setattr(E, "cpu_has_bf16_units", lambda: True)
    before = torch.random.get_rng_state()
    speedup = E.cpu_bf16_conv_speedup(batch=2, reps=1)
    assert math.isfinite(speedup) and speedup > 0
    assert torch.equal(torch.random.get_rng_state(), before)  # agents seeded alike init alike
    E.cpu_bf16_conv_speedup.cache_clear()


@pytest.mark.parametrize("speedup, says", [(2.5, "convs in bfloat16 (bf16 convs ran 2.50x as fast as fp32 here)"),
                                           (0.7, "convs in float32 (bf16 convs ran 0.70x as fast as fp32 here)"),
                                           (0.0, "convs in float32 (this CPU has no bf16 units)")])
def test_auto_precision_says_what_it_chose_and_why(monkeypatch, speedup, says):
    monkeypatch.setattr(E, "cpu_bf16_conv_speedup", lambda: speedup)
    assert E.auto_precision_notice("cpu") == f"precision auto: {says}"


def test_resolve_precision(monkeypatch):
    assert E.resolve_precision("float32", "cpu") is torch.float32
    assert E.resolve_precision("bfloat16", "cpu") is torch.bfloat16
    for speedup, expected in ((2.5, torch.bfloat16), (0.7, torch.float32), (0.0, torch.float32)):
        monkeypatch.setattr(E, "cpu_bf16_conv_speedup", lambda: speedup)
        assert E.resolve_precision("auto", "cpu") is expected
    with pytest.raises(ValueError, match="'fp16'.*float32, bfloat16, auto"):
        E.resolve_precision("fp16", "cpu")
    # on CUDA, "auto" takes bf16 only where cuDNN has bf16 convs: compute capability 8.0 (Ampere) on
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # true on a V100 too
    asked = []
    for capability, expected in (((7, 0), torch.float32), ((7, 5), torch.float32), ((8, 0), torch.bfloat16),
                                 ((9, 0), torch.bfloat16)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: asked.append(d) or capability)
        assert E.resolve_precision("auto", "cuda:1") is expected
    assert asked[-1] == torch.device("cuda:1")  # the device asked for, not the current one
    with pytest.raises(ValueError, match="compute_dtype"):
        E.ConvEncoder((9, 84, 84), compute_dtype=torch.float16)
