"""Checkpoints: atomic save, safe load, compatibility checks and a rolling checkpoint directory.

A checkpoint is one file written by ``torch.save`` and read back with
``torch.load(..., weights_only=True)``: loading never unpickles arbitrary objects, so a checkpoint
from an untrusted source cannot run code. What a payload may hold is therefore limited to what
the weights-only unpickler accepts plus numpy, which is converted on the way in and out:

- dicts (including ``OrderedDict`` state dicts), lists, tuples, sets;
- ``torch.Tensor`` (and ``nn.Parameter``), ``torch.Size``, ``torch.dtype``, ``torch.device``;
- numpy arrays and numpy scalars: stored as tensors (``torch.from_numpy``) inside a marker dict
  and returned as numpy arrays / numpy scalars of the same dtype and shape;
- ``int`` (any size), ``float``, ``complex``, ``bool``, ``str``, ``bytes``, ``None``.

Anything else (a dataclass, a ``Path``, a namedtuple, a numpy object array) is refused by
``save_checkpoint`` with a ``TypeError`` naming where it sits in the payload, so a checkpoint that
could be written can always be read.

The file holds the caller's payload with a header merged into its top level::

    {"format": "crl-checkpoint", "version": 1, "crl_version": "...", "torch_version": "...",
     "saved_at": <unix time>, **payload}

``load_checkpoint`` returns that whole dict (header keys included). The payload may not use the
header keys itself. By convention the training loop stores the agent's registry name under
``"agent"`` and its config as a plain dict under ``"config"``; ``check_compatible`` reads those.
"""

from __future__ import annotations

import collections
import math
import os
import pickle
import re
import time
import warnings
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crl import __version__ as _crl_version
from crl.fileio import atomic_write

__all__ = [
    "FORMAT",
    "VERSION",
    "HEADER_KEYS",
    "DEFAULT_IGNORED_FIELDS",
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "check_compatible",
    "CheckpointManager",
]

FORMAT = "crl-checkpoint"
VERSION = 1
HEADER_KEYS = frozenset({"format", "version", "crl_version", "torch_version", "saved_at"})

# Marker for numpy values stored as tensors. A dict carrying this key is a converted numpy value.
_NDARRAY = "__crl_ndarray__"

# Config fields that may change between the run that wrote a checkpoint and the run that resumes
# from it without changing any network shape or the meaning of the saved state. Callers that know
# their config should pass their own set.
DEFAULT_IGNORED_FIELDS = frozenset(
    {
        "frames",
        "total_frames",
        "budget",
        "frame_budget",
        "num_frames",
        "max_frames",
        "logdir",
        "log_dir",
        "run_dir",
        "out_dir",
        "device",
        "seed",
        "resume",
        "eval_every",
        "eval_episodes",
        "num_eval_episodes",
        "checkpoint_every",
        "keep_checkpoints",
        "log_every",
        "save_video",
        "video",
        "progress",
        "tensorboard",
        "num_threads",
    }
)


class CheckpointError(RuntimeError):
    """A checkpoint could not be loaded or does not fit the agent/config that wants to load it."""


class NoLoadableCheckpoint(CheckpointError):
    """Checkpoint files exist but none of them loads (each is truncated, corrupt or not crl's)."""


# --------------------------------------------------------------------------------------------
# payload conversion


def _where(path: tuple) -> str:
    return "payload" + "".join(f"[{k!r}]" for k in path)


_SCALARS = (type(None), bool, int, float, complex, str, bytes, bytearray)


def _check_key(key: Any, path: tuple) -> None:
    # keys stay as they are, so they must be exactly plain scalars (or tuples of them): a str or
    # int subclass (an enum, numpy scalar, torch's TorchVersion) would not load with weights_only
    if type(key) is tuple:
        for k in key:
            _check_key(k, path)
    elif type(key) not in _SCALARS:
        raise TypeError(
            f"cannot checkpoint {_where(path)}: key {key!r} of type {type(key).__qualname__} "
            "is not a plain int/str/float/bool/None/bytes (or a tuple of them)"
        )


def _encode(obj: Any, path: tuple = ()) -> Any:
    """Numpy -> marked tensors; check every leaf is something weights_only can read back."""
    # numpy first: np.float64 is a float subclass, np.bool_ is not a bool.
    if isinstance(obj, (np.ndarray, np.generic)):
        arr = np.asarray(obj)
        if arr.dtype.hasobject or arr.dtype.kind in "OUSVMm":
            raise TypeError(
                f"cannot checkpoint {_where(path)}: numpy dtype {arr.dtype} has no tensor equivalent"
            )
        native = arr.astype(arr.dtype.newbyteorder("="), copy=False)
        if not native.flags.c_contiguous:  # (np.ascontiguousarray would turn 0-d into 1-d)
            native = native.copy(order="C")
        try:
            with warnings.catch_warnings():  # read-only arrays: torch only reads them here
                warnings.simplefilter("ignore", UserWarning)
                tensor = torch.from_numpy(native)
        except TypeError as e:
            raise TypeError(f"cannot checkpoint {_where(path)}: {e}") from None
        return {
            _NDARRAY: tensor,
            "dtype": arr.dtype.str,
            "scalar": isinstance(obj, np.generic),
        }
    if type(obj) in _SCALARS:  # exact types: subclasses (enums, TorchVersion) would not load
        return obj
    if isinstance(obj, (torch.Tensor, torch.Size, torch.dtype, torch.device)):
        return obj
    if isinstance(obj, Mapping) and type(obj) in (dict, collections.OrderedDict):
        if _NDARRAY in obj:
            raise TypeError(f"cannot checkpoint {_where(path)}: the key {_NDARRAY!r} is reserved")
        for k in obj:
            _check_key(k, path + (k,))
        out = type(obj)((k, _encode(v, path + (k,))) for k, v in obj.items())
        meta = getattr(obj, "_metadata", None)  # nn.Module.state_dict() version info
        if meta is not None:
            out._metadata = meta
        return out
    if type(obj) is list:
        return [_encode(v, path + (i,)) for i, v in enumerate(obj)]
    if type(obj) is tuple:
        return tuple(_encode(v, path + (i,)) for i, v in enumerate(obj))
    if type(obj) is set:  # (a frozenset is saved by torch but refused by its weights_only loader)
        for v in obj:
            _check_key(v, path + ("<set item>",))
        return obj
    raise TypeError(
        f"cannot checkpoint {_where(path)}: objects of type {type(obj).__module__}."
        f"{type(obj).__qualname__} cannot be loaded back safely (weights_only); convert it to "
        "dicts, lists, tuples, tensors, numpy arrays and plain Python scalars"
    )


def _device(map_location: Any) -> torch.device | None:
    if map_location is None:
        return None
    if isinstance(map_location, (str, torch.device)):
        dev = torch.device(map_location)
        return None if dev.type == "cpu" else dev
    raise TypeError(
        f"map_location must be a device string or torch.device, got {type(map_location).__name__}"
    )


def _move(t: torch.Tensor, device: torch.device | None) -> torch.Tensor:
    if device is None:
        return t
    if isinstance(t, torch.nn.Parameter):
        return torch.nn.Parameter(t.data.to(device), requires_grad=t.requires_grad)
    return t.to(device)


def _decode_ndarray(obj: dict) -> Any:
    """A numpy array back from its marked tensor. Its dtype must be a plain number or bool of
    the tensor's element size (what `_encode` writes): a crafted dtype ("(10000,)f8", objects,
    records) could otherwise turn a small file into a huge array."""
    tensor = obj[_NDARRAY]
    dtype = np.dtype(obj["dtype"])
    if not isinstance(tensor, torch.Tensor) or dtype.kind not in "biufc" or dtype.subdtype is not None \
            or dtype.itemsize != tensor.element_size():
        raise ValueError(f"numpy value of dtype {obj['dtype']!r} does not match its stored tensor")
    arr = tensor.numpy().astype(dtype, copy=False)
    return arr[()] if obj.get("scalar") else arr


def _decode(obj: Any, device: torch.device | None = None) -> Any:
    if isinstance(obj, torch.Tensor):
        return _move(obj, device)
    if isinstance(obj, dict):
        if _NDARRAY in obj:
            return _decode_ndarray(obj)
        out = type(obj)((k, _decode(v, device)) for k, v in obj.items())
        meta = getattr(obj, "_metadata", None)
        if meta is not None:
            out._metadata = meta
        return out
    if isinstance(obj, list):
        return [_decode(v, device) for v in obj]
    if type(obj) is tuple:
        return tuple(_decode(v, device) for v in obj)
    return obj


# --------------------------------------------------------------------------------------------
# files


def save_checkpoint(path: str | os.PathLike, payload: dict) -> None:
    """Atomically write ``payload`` (plus the crl header) to ``path``.

    A crash or exception while writing leaves an existing file at ``path`` intact.
    Raises ``TypeError`` for values that could not be loaded back with ``weights_only=True`` and
    ``ValueError`` if the payload uses a header key.
    """
    if not isinstance(payload, Mapping):
        raise TypeError(f"checkpoint payload must be a dict, got {type(payload).__name__}")
    clash = HEADER_KEYS.intersection(payload)
    if clash:
        raise ValueError(f"checkpoint payload may not use the reserved header keys {sorted(clash)}")
    header = {
        "format": FORMAT,
        "version": VERSION,
        "crl_version": str(_crl_version),
        "torch_version": str(torch.__version__),
        "saved_at": time.time(),
    }
    obj = {**header, **_encode(dict(payload))}
    atomic_write(Path(path), lambda f: torch.save(obj, f))


def _short(msg: str, limit: int = 300) -> str:
    msg = " ".join(str(msg).split())
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


def _check_record_checksums(path: Path) -> None:
    """torch's zip reader does not check the CRC-32 of each record, so flipped bits in a tensor's
    bytes would load as changed weights; zipfile's check reads the file once more."""
    try:
        with zipfile.ZipFile(path) as archive:
            records = archive.infolist()
            if not any(r.CRC for r in records):
                return  # saved with torch.serialization.set_crc32_options(False): nothing to check
            bad = archive.testzip()
    except Exception:  # noqa: BLE001 - not a readable zip (or a damaged deflate stream): torch.load says what it is
        return
    if bad is not None:
        raise CheckpointError(f"checkpoint {path} is corrupt: record {bad} fails its CRC-32 check "
                              "(damaged on disk or in transfer)")


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`; every failure is a CheckpointError.

    Uses ``torch.load(weights_only=True)``. Numpy values come back as numpy arrays; tensors are
    moved to ``map_location`` (a device string or ``torch.device``; ``None`` or "cpu" keeps them
    on the CPU). An unusable device raises the usual torch error, not CheckpointError.
    """
    path = Path(path)
    device = _device(map_location)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a file")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): the write never completed")
    _check_record_checksums(path)
    try:
        # Always read onto the CPU so that every exception here is about the file itself; tensors
        # are moved to map_location afterwards (a device error is then not mistaken for a
        # corrupt file).
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except MemoryError:  # not a property of the file: let it surface, don't skip the checkpoint
        raise
    except pickle.UnpicklingError as e:
        text = str(e)
        if "Weights only load failed" in text:
            m = re.search(r"(Unsupported global: [^\n]*|unsupported GLOBAL [^\n]*|Unsupported operand[^\n]*)", text)
            detail = m.group(1).strip() if m else _short(text.splitlines()[-1] if text else "")
            raise CheckpointError(
                f"refusing to load {path}: it contains objects that are not plain tensors or "
                f"containers (weights_only load failed: {_short(detail)}); it is not a crl "
                "checkpoint or it has been tampered with"
            ) from None
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a checkpoint ({size} bytes): {_short(text)}"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, IndexError, ValueError, KeyError,
            OSError, AttributeError, TypeError) as e:
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt ({size} bytes; "
            f"{type(e).__name__}: {_short(e)})"
        ) from None
    except Exception as e:  # anything else a damaged file can provoke inside torch.load
        raise CheckpointError(
            f"checkpoint {path} could not be read ({type(e).__name__}: {_short(e)})"
        ) from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is a torch file but not a crl checkpoint (no '{FORMAT}' header)"
        )
    version = obj.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {version!r}; this crl reads versions <= {VERSION}"
        )
    try:
        return _decode(obj, device)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(
            f"checkpoint {path} is malformed ({type(e).__name__}: {_short(e)})"
        ) from None


# --------------------------------------------------------------------------------------------
# compatibility


def _flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(cfg, Mapping):
        for k, v in cfg.items():
            name = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, Mapping) and v:
                out.update(_flatten(v, name))
            else:
                out[name] = v
    return out


def _normalise(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return [_normalise(x) for x in v]
    if isinstance(v, Mapping):
        return {k: _normalise(x) for k, x in v.items()}
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, torch.Tensor):
        return v.tolist()
    return v


def _same(a: Any, b: Any) -> bool:
    a, b = _normalise(a), _normalise(b)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    try:
        return bool(a == b)
    except Exception:
        return False


_MISSING = "<absent>"


def check_compatible(
    payload: Mapping,
    agent: str,
    config: Mapping,
    path: str | os.PathLike,
    *,
    ignore: Iterable[str] | None = None,
) -> None:
    """Raise CheckpointError unless ``payload`` was written by ``agent`` with a matching config.

    ``payload["agent"]`` is the agent name stored at save time and ``payload["config"]`` the
    config dict. Nested config dicts are compared field by field (``a.b`` names). Fields in
    ``ignore`` (matched against the full dotted name or the last component; default
    ``DEFAULT_IGNORED_FIELDS``) may differ. Tuples and lists compare equal.
    """
    ignore = DEFAULT_IGNORED_FIELDS if ignore is None else frozenset(ignore)
    if "agent" not in payload:
        raise CheckpointError(f"checkpoint {path} does not record which agent wrote it ('agent')")
    saved_agent = payload["agent"]
    if saved_agent != agent:
        raise CheckpointError(
            f"checkpoint {path} was written by agent {saved_agent!r}, not {agent!r}"
        )
    if "config" not in payload or not isinstance(payload["config"], Mapping):
        raise CheckpointError(f"checkpoint {path} does not record its config ('config')")
    saved = _flatten(payload["config"])
    current = _flatten(config)
    diffs = []
    for name in list(saved) + [k for k in current if k not in saved]:
        if name in ignore or name.rsplit(".", 1)[-1] in ignore:
            continue
        a = saved.get(name, _MISSING)
        b = current.get(name, _MISSING)
        if a is _MISSING or b is _MISSING or not _same(a, b):
            a_s = a if a is _MISSING else repr(_normalise(a))
            b_s = b if b is _MISSING else repr(_normalise(b))
            diffs.append(f"{name}: {a_s} in the checkpoint, {b_s} now")
    if diffs:
        raise CheckpointError(
            f"checkpoint {path} (agent {agent!r}) does not match the current config; "
            f"differing fields: " + "; ".join(diffs)
        )


# --------------------------------------------------------------------------------------------
# rolling checkpoints


_CKPT_RE = re.compile(r"^ckpt_(\d{12,})\.pt$")


class CheckpointManager:
    """A directory of ``ckpt_{frames:012d}.pt`` files, newest ``keep`` kept.

    ``keep=None`` keeps every checkpoint. Saving never deletes the file just written, and a
    checkpoint is only pruned after a newer one is safely on disk, so a crash never loses the
    previous checkpoint.
    """

    def __init__(self, directory: str | os.PathLike, keep: int | None = 3):
        if keep is not None and keep < 1:
            raise ValueError(f"keep must be >= 1 or None, got {keep}")
        self.directory = Path(directory)
        self.keep = keep
        self.loaded_path: Path | None = None  # set by load_latest

    def path_for(self, frames: int) -> Path:
        return self.directory / f"ckpt_{int(frames):012d}.pt"

    @staticmethod
    def frames_of(path: str | os.PathLike) -> int:
        m = _CKPT_RE.match(Path(path).name)
        if not m:
            raise ValueError(f"{path} is not a checkpoint file name (ckpt_<frames>.pt)")
        return int(m.group(1))

    def list(self) -> list[Path]:
        """Checkpoint files, oldest (fewest frames) first."""
        if not self.directory.is_dir():
            return []
        found = [p for p in self.directory.iterdir() if _CKPT_RE.match(p.name) and p.is_file()]
        return sorted(found, key=self.frames_of)

    def latest(self) -> Path | None:
        files = self.list()
        return files[-1] if files else None

    def save(self, payload: dict, frames: int) -> Path:
        if int(frames) < 0:
            raise ValueError(f"frames must be >= 0, got {frames}")
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path_for(frames)
        save_checkpoint(path, payload)
        self._prune(keep_path=path)
        self._remove_stale_temps()
        return path

    def _prune(self, keep_path: Path) -> None:
        # Keep the file just written plus the newest keep-1 before it. Files from further along
        # (a run resumed from an older checkpoint because a newer one would not load) are neither
        # counted nor removed: counting an unreadable one would prune the readable fallbacks, and
        # the run overwrites each of them when it gets to its frames.
        if self.keep is None:
            return
        written = self.frames_of(keep_path)
        others = [p for p in self.list() if self.frames_of(p) < written]
        survivors = others[len(others) - (self.keep - 1):] if self.keep > 1 else []
        for p in others:
            if p not in survivors:
                try:
                    p.unlink()
                except FileNotFoundError:
                    pass

    def _remove_stale_temps(self) -> None:
        # leftovers of a writer killed mid-save: hidden ".ckpt_....pt.<random>.tmp" files
        for p in self.directory.glob(".ckpt_*.pt.*.tmp"):
            try:
                p.unlink()
            except OSError:
                pass

    def load_latest(self, map_location: Any = "cpu") -> dict | None:
        """Load the newest checkpoint that loads; ``None`` if the directory holds none.

        A checkpoint that fails with CheckpointError (truncated, corrupt, not a crl checkpoint)
        is skipped with a ``RuntimeWarning`` naming it and the previous one is tried; the bad
        file is left in place (the next save at those frames overwrites it; until then pruning
        neither counts nor removes it). If every checkpoint fails, CheckpointError lists them all.
        ``self.loaded_path`` is set to the file that loaded.
        """
        self.loaded_path = None
        files = self.list()
        if not files:
            return None
        errors = []
        for path in reversed(files):
            try:
                payload = load_checkpoint(path, map_location=map_location)
            except CheckpointError as e:
                errors.append(str(e))
                warnings.warn(
                    f"skipping unreadable checkpoint ({e}); falling back to the previous one",
                    RuntimeWarning,
                    stacklevel=2,
                )
                continue
            self.loaded_path = path
            return payload
        raise NoLoadableCheckpoint(
            f"no checkpoint in {self.directory} could be loaded: " + " | ".join(errors)
        )
