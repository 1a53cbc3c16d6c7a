import collections
import os
import pickle
import zipfile
import random
import warnings

import numpy as np
import pytest
import torch

from crl import checkpoint as ckpt
from crl.checkpoint import (
    CheckpointError,
    CheckpointManager,
    check_compatible,
    load_checkpoint,
    save_checkpoint,
)


def _optimizer_state():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(2):
        opt.zero_grad()
        net(torch.randn(5, 4)).pow(2).sum().backward()
        opt.step()
    return net, opt


def _payload():
    net, opt = _optimizer_state()
    rng = np.random.default_rng(123)
    rng.random(7)  # advance so the state is not the seed's
    random.seed(5)
    random.random()
    return {
        "agent": "sac",
        "config": {"lr": 1e-3, "hidden": (256, 256), "env": "dmc:cheetah-run", "seed": 1},
        "model": net.state_dict(),
        "optimizer": opt.state_dict(),
        "replay": {
            "obs": rng.integers(0, 256, size=(10, 3, 8, 8), dtype=np.uint8),
            "done": rng.random(10) < 0.3,
            "reward": rng.standard_normal(10).astype(np.float32),
            "action": rng.standard_normal((10, 2)),  # float64
            "index": np.arange(10, dtype=np.int64)[::-2],  # non-contiguous view
            "ep_len": np.array(17, dtype=np.int32),  # 0-d
            "half": np.ones(3, dtype=np.float16),
            "big_endian": np.arange(4, dtype=">i4"),
            "count": np.int64(42),  # numpy scalar
        },
        "rng": {
            "numpy": rng.bit_generator.state,  # dict with ints > 2**64
            "python": random.getstate(),  # tuple(3, tuple of 625 ints, None)
            "torch": torch.get_rng_state(),  # ByteTensor
        },
        "counters": {"frames": 2**40 + 1, "agent_steps": 10, "updates": 0},
        "big": -(2**200),
        "misc": (1, 2.5, "x", None, True, [1, (2, 3)], b"bytes"),
        "nan": float("nan"),
    }


def _assert_equal(a, b, where="payload"):
    if isinstance(a, np.ndarray) or isinstance(a, np.generic):
        assert type(b) is type(a), f"{where}: {type(b)} != {type(a)}"
        assert b.dtype == a.dtype and b.shape == a.shape, where
        np.testing.assert_array_equal(b, a, err_msg=where)
    elif isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        assert b.dtype == a.dtype and b.shape == a.shape, where
        assert torch.equal(b, a), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(b) == list(a), where
        for k in a:
            _assert_equal(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(b) is type(a) and len(b) == len(a), f"{where}: {type(b)} vs {type(a)}"
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_equal(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and a != a:
        assert isinstance(b, float) and b != b, where
    else:
        assert type(b) is type(a) and b == a, f"{where}: {b!r} != {a!r}"


def test_round_trip_exact(tmp_path):
    payload = _payload()
    path = tmp_path / "c.pt"
    save_checkpoint(path, payload)
    loaded = load_checkpoint(path)
    assert loaded["format"] == "crl-checkpoint" and loaded["version"] == 1
    body = {k: v for k, v in loaded.items() if k not in ckpt.HEADER_KEYS}
    _assert_equal(payload, body)
    # the originals were not modified by the conversion
    assert isinstance(payload["replay"]["obs"], np.ndarray)
    # RNG states restore and reproduce the same draws
    random.setstate(loaded["rng"]["python"])
    r1 = random.random()
    random.setstate(payload["rng"]["python"])
    assert random.random() == r1
    g = np.random.default_rng()
    g.bit_generator.state = loaded["rng"]["numpy"]
    h = np.random.default_rng()
    h.bit_generator.state = payload["rng"]["numpy"]
    assert g.random() == h.random()
    torch.set_rng_state(loaded["rng"]["torch"])
    # state dicts load back into fresh modules / optimizers
    net, opt = _optimizer_state()
    net.load_state_dict(loaded["model"])
    opt.load_state_dict(loaded["optimizer"])
    assert isinstance(loaded["model"], collections.OrderedDict)


def test_map_location_moves_tensors_but_not_numpy(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, _payload())
    loaded = load_checkpoint(path, map_location="meta")
    assert loaded["model"]["0.weight"].device.type == "meta"
    assert loaded["optimizer"]["state"][0]["exp_avg"].device.type == "meta"
    assert isinstance(loaded["replay"]["obs"], np.ndarray)
    with pytest.raises(TypeError, match="map_location"):
        load_checkpoint(path, map_location={"cpu": "cpu"})


def test_unsupported_values_refused_at_save(tmp_path):
    class Foo:
        pass

    with pytest.raises(TypeError, match=r"payload\['a'\]\[0\].*Foo"):
        save_checkpoint(tmp_path / "c.pt", {"a": [Foo()]})
    with pytest.raises(TypeError, match="dtype"):
        save_checkpoint(tmp_path / "c.pt", {"a": np.array(["x", None], dtype=object)})
    with pytest.raises(TypeError, match="key"):
        save_checkpoint(tmp_path / "c.pt", {"a": {np.int64(3): 1}})
    import enum

    class Mode(enum.IntEnum):
        A = 1

    with pytest.raises(TypeError, match="Mode"):
        save_checkpoint(tmp_path / "c.pt", {"a": Mode.A})
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(tmp_path / "c.pt", {"format": "mine"})
    with pytest.raises(TypeError, match="frozenset"):  # torch saves it, its weights_only loader refuses it
        save_checkpoint(tmp_path / "c.pt", {"a": frozenset({1})})
    assert list(tmp_path.iterdir()) == []


def test_flipped_bits_in_a_tensor_record_fail_its_checksum(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"w": torch.arange(4096, dtype=torch.float32)})
    with zipfile.ZipFile(path) as archive:
        record = next(i for i in archive.infolist() if i.filename.endswith("data/0"))
    data = bytearray(path.read_bytes())
    start = record.header_offset + 30 + len(record.filename) + len(record.extra) + 1000
    data[start:start + 64] = bytes(b ^ 0xFF for b in data[start:start + 64])
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"record .*data/0 fails its CRC-32 check"):
        load_checkpoint(path)


def test_a_crafted_numpy_dtype_is_refused(tmp_path):
    # 4 stored bytes claimed as 10000 float64s each: a small file that would decode to a huge array
    path = tmp_path / "c.pt"
    header = {"format": "crl-checkpoint", "version": 1}
    torch.save(header | {"a": {"__crl_ndarray__": torch.zeros(1000), "dtype": "(10000,)f8", "scalar": False}}, path)
    with pytest.raises(CheckpointError, match=r"dtype '\(10000,\)f8' does not match its stored tensor"):
        load_checkpoint(path)


def test_missing_truncated_and_garbage_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    path = tmp_path / "c.pt"
    save_checkpoint(path, _payload())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as e:
        load_checkpoint(path)
    assert str(path) in str(e.value)
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(path)
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert str(path) in str(e.value)


def test_torch_file_without_header_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({"weights": torch.ones(3)}, path)
    with pytest.raises(CheckpointError, match="not a crl checkpoint") as e:
        load_checkpoint(path)
    assert str(path) in str(e.value)


_CALLS = []


def _record(arg):
    _CALLS.append(arg)


class _Evil:
    def __reduce__(self):  # unpickling this would call _record("pwned")
        return (_record, ("pwned",))


class _Plain:
    pass


def test_weights_only_refuses_arbitrary_objects(tmp_path):
    # a file that looks like a crl checkpoint but holds an arbitrary class
    path = tmp_path / "evil.pt"
    torch.save({"format": "crl-checkpoint", "version": 1, "x": _Plain()}, path)
    with pytest.raises(CheckpointError, match="refusing to load") as e:
        load_checkpoint(path)
    assert str(path) in str(e.value)
    # a pickle payload that would run code on unpickling is never executed
    path2 = tmp_path / "evil2.pt"
    torch.save({"format": "crl-checkpoint", "version": 1, "x": _Evil()}, path2)
    with pytest.raises(CheckpointError):
        load_checkpoint(path2)
    assert _CALLS == []
    # (sanity: plain unpickling really would have run it)
    torch.load(path2, weights_only=False)
    assert _CALLS == ["pwned"]
    # and a bare pickle is refused too
    path3 = tmp_path / "evil3.pt"
    path3.write_bytes(pickle.dumps(_Plain(), protocol=2))
    with pytest.raises(CheckpointError):
        load_checkpoint(path3)


def test_load_uses_weights_only(tmp_path, monkeypatch):
    seen = []
    real = torch.load

    def spy(*args, **kwargs):
        seen.append(kwargs.get("weights_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    save_checkpoint(tmp_path / "c.pt", {"a": 1})
    assert load_checkpoint(tmp_path / "c.pt")["a"] == 1
    assert seen == [True]


def test_crash_during_write_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"step": 1, "w": torch.arange(1000)})
    before = path.read_bytes()
    real_save = torch.save

    def half_then_crash(obj, f, *a, **k):
        f.write(b"PK\x03\x04 partial bytes")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(torch, "save", half_then_crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"step": 2, "w": torch.zeros(1000)})
    monkeypatch.setattr(torch, "save", real_save)

    def failing_replace(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk gone"):
        save_checkpoint(path, {"step": 3})
    monkeypatch.undo()

    assert path.read_bytes() == before
    assert load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]  # no temp files left


def test_check_compatible(tmp_path):
    path = tmp_path / "c.pt"
    cfg = {"lr": 1e-3, "hidden": (256, 256), "env": "dmc:cheetah-run", "seed": 1,
           "logdir": "runs/a", "device": "cpu", "total_frames": 100_000,
           "encoder": {"channels": 32, "layers": 4}}
    save_checkpoint(path, {"agent": "sac", "config": cfg})
    payload = load_checkpoint(path)
    # identical, and differing only in ignorable fields; tuples vs lists are the same
    check_compatible(payload, "sac", cfg, path)
    same = dict(cfg, seed=2, logdir="runs/b", device="cuda", total_frames=500_000,
                hidden=[256, 256])
    check_compatible(payload, "sac", same, path)

    with pytest.raises(CheckpointError, match="written by agent 'sac', not 'drq'") as e:
        check_compatible(payload, "drq", cfg, path)
    assert str(path) in str(e.value)

    other = dict(cfg, hidden=(512, 512), encoder={"channels": 64, "layers": 4}, new_field=3)
    del other["lr"]
    with pytest.raises(CheckpointError) as e:
        check_compatible(payload, "sac", other, path)
    msg = str(e.value)
    assert str(path) in msg
    assert "hidden: [256, 256] in the checkpoint, [512, 512] now" in msg
    assert "encoder.channels: 32 in the checkpoint, 64 now" in msg
    assert "lr: 0.001 in the checkpoint, <absent> now" in msg
    assert "new_field: <absent> in the checkpoint, 3 now" in msg
    assert "seed" not in msg and "encoder.layers" not in msg

    # caller-provided ignore set replaces the default
    with pytest.raises(CheckpointError, match="seed: 1 in the checkpoint, 2 now"):
        check_compatible(payload, "sac", dict(cfg, seed=2), path, ignore={"logdir"})
    check_compatible(payload, "sac", dict(cfg, lr=0.5), path, ignore={"lr"})

    with pytest.raises(CheckpointError, match="agent"):
        check_compatible({"config": cfg}, "sac", cfg, path)


def test_manager_keep_latest_and_list(tmp_path):
    m = CheckpointManager(tmp_path / "checkpoints", keep=2)
    assert m.list() == [] and m.latest() is None and m.load_latest() is None
    for frames in (1000, 2000, 3000, 10_000):
        p = m.save({"frames": frames}, frames=frames)
        assert p.name == f"ckpt_{frames:012d}.pt"
    names = [p.name for p in m.list()]
    assert names == ["ckpt_000000003000.pt", "ckpt_000000010000.pt"]
    assert m.latest().name == "ckpt_000000010000.pt"
    assert m.load_latest()["frames"] == 10_000
    assert m.loaded_path == m.latest()

    every = CheckpointManager(tmp_path / "all", keep=None)
    for frames in range(5):
        every.save({"f": frames}, frames)
    assert len(every.list()) == 5
    with pytest.raises(ValueError):
        CheckpointManager(tmp_path, keep=0)


def test_manager_falls_back_when_latest_is_truncated(tmp_path):
    m = CheckpointManager(tmp_path, keep=3)
    m.save({"frames": 100, "w": torch.arange(500)}, 100)
    latest = m.save({"frames": 200, "w": torch.arange(500)}, 200)
    data = latest.read_bytes()
    latest.write_bytes(data[: len(data) // 2])  # crash-like damage to the newest file

    with pytest.raises(CheckpointError) as e:
        load_checkpoint(latest)
    assert str(latest) in str(e.value)

    with pytest.warns(RuntimeWarning, match="ckpt_000000000200.pt"):
        payload = m.load_latest()
    assert payload["frames"] == 100
    assert m.loaded_path.name == "ckpt_000000000100.pt"

    # a stale temp file from a writer killed mid-save is ignored and later cleaned up
    stale = tmp_path / ".ckpt_000000000300.pt.abc123.tmp"
    stale.write_bytes(b"partial")
    assert [p.name for p in m.list()] == ["ckpt_000000000100.pt", "ckpt_000000000200.pt"]
    m.save({"frames": 200}, 200)  # overwrites the damaged one
    assert not stale.exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert m.load_latest()["frames"] == 200


def test_manager_all_corrupt_raises(tmp_path):
    m = CheckpointManager(tmp_path)
    (tmp_path / "ckpt_000000000001.pt").write_bytes(b"junk")
    with pytest.warns(RuntimeWarning):
        with pytest.raises(CheckpointError, match="no checkpoint"):
            m.load_latest()


def test_save_never_prunes_the_file_just_written(tmp_path):
    m = CheckpointManager(tmp_path, keep=1)
    m.save({"f": 500}, 500).write_bytes(b"junk")  # unreadable, so the run resumed from an earlier point
    p = m.save({"f": 300}, 300)
    assert p.exists() and [q.name for q in m.list()] == ["ckpt_000000000300.pt", "ckpt_000000000500.pt"]
    with pytest.warns(RuntimeWarning, match="ckpt_000000000500.pt"):
        assert m.load_latest()["f"] == 300


def test_an_unreadable_newer_checkpoint_does_not_count_towards_keep(tmp_path):
    m = CheckpointManager(tmp_path, keep=2)
    for frames in (1600, 2000, 2400):
        m.save({"f": frames}, frames)
    m.path_for(2400).write_bytes(b"truncated")  # the resume falls back to 2000
    for frames in (2100, 2200):  # the resumed run saves on before it reaches 2400 again
        m.save({"f": frames}, frames)
    assert [m.frames_of(p) for p in m.list()] == [2100, 2200, 2400]  # two readable fallbacks, not one
    with pytest.warns(RuntimeWarning):
        assert m.load_latest()["f"] == 2200
    m.save({"f": 2400}, 2400)  # overwrites the unreadable file, and pruning is back to the newest two
    assert [m.frames_of(p) for p in m.list()] == [2200, 2400]
