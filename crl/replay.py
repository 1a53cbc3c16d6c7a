"""Episodic replay: every frame stored once, frame stacks rebuilt when sampling.

One store serves the three kinds of batch the agents need (n-step transitions, sequences,
goal-relabelled transitions), online and offline.

Storage
-------
* Observations arrive frame-stacked along axis 0, newest frame LAST (DMC pixels: uint8 (9, 84, 84)
  = 3 frames x 3 channels; Atari (4, 84, 84); state vectors are stack 1). The store keeps only the
  newest frame of each observation, so an episode of T steps holds T + 1 frames (obs_0 .. obs_T)
  and T steps (action, reward, terminated, truncated, extras). Step t lives in the same slot as
  its source frame t; the slot of an episode's last frame has no step.
* Dict observations (goal envs: ``observation``, ``achieved_goal``, ``desired_goal``) are stored
  field by field; each field has its own frame stack (``frame_stack`` may be an int, applied to
  every field, or a mapping ``{field: stack}`` with missing fields at 1). An array observation is
  the single field ``"obs"``.
* Frames keep their dtype (uint8 pixels stay uint8), except float64, which is stored as float32.
* ``keep_frames_on(device)`` adds a copy of the frame arrays on a GPU, written with every frame;
  batches sampled for that device then gather their observations there (the host arrays stay the
  store of record).
* Stacks are rebuilt from positions ``max(p - k + 1 + i, 0)``, i = 0..k-1, inside one episode:
  they never cross an episode boundary, and the first k - 1 observations of an episode repeat its
  first frame, exactly as the environment's frame stack does at reset.

Capacity, streams, eviction
---------------------------
``capacity`` counts stored frames. ``num_streams`` concurrent streams (vector envs) each own a
contiguous ring of ``capacity // num_streams`` frames (the layout of SB3's (size / n_envs, n_envs)
buffers); inside a stream every episode is contiguous, so a frame's slot is one formula and all
gathers are vectorised. When a stream's ring is full its oldest whole episode is evicted (FIFO by
episode within each stream; with streams advancing in lockstep this is global FIFO to within one
episode). An episode longer than a stream's ring is an error. Offline datasets use one stream.

Sampleable data
---------------
Transitions become sampleable as soon as they are added. A window (n-step, sequence) that would
run past the current end of an unfinished episode is not drawn until it is complete; inside a
finished episode windows are truncated at the episode end.

* ``sample_transitions``: n-step returns. ``reward = sum_{k<m} gamma^k r_{t+k}`` with
  ``m = min(n, T - t)``; ``discount = gamma^m``, times 0 if the episode terminated inside the
  window (bootstrap through truncation, never through termination); ``next_obs`` = stacked obs at
  ``t + m``.
* ``sample_sequences``: windows of ``length`` steps starting at any step. In finished episodes a
  window may run past the end (``pad=True``): padded steps have zero action/reward/flags and
  ``mask = 0``; padded observations repeat the episode's last observation (``obs_mask = 0``).
  With ``pad=False`` only windows fully inside an episode are drawn.
* ``sample_goals``: the positive goal for step i is observation j of the same episode, j in
  i+1..T (obs T is the final next_obs), drawn with P(j) proportional to gamma^(j - i) (a truncated
  geometric); only finished episodes are used unless ``include_unfinished=True`` (then the future
  ends at the current last observation). With probability ``random_goal_prob`` the goal is instead
  a uniformly random stored observation (``goal_offset = -1``).

Offline loading: ``add_episode`` takes the T + 1 observations obs_0 .. obs_T of an episode as
single frames by default (``stacked=False``), or as stacked observations (``stacked=True``; the
newest frame of each is kept). The episode is finished on load: if its last step is neither
terminated nor truncated it is marked truncated.

Checkpoints: ``state_dict()`` holds numpy arrays only (live data, compacted in episode order, plus
the sampling RNG state), suitable for ``np.savez`` / safetensors; ``load_state_dict`` restores the
same layout, so sampling and later additions continue exactly.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

OBS_FIELD = "obs"
"""Name of the single field of an array (non-dict) observation."""

STEP_FIELDS = ("action", "reward", "terminated", "truncated")
"""Per-step fields every episode stores; extra per-step fields may be added by name."""

_RESERVED = set(STEP_FIELDS) | {
    "discount", "steps", "mask", "obs_mask", "is_first", "goal", "goal_offset", "episode", "step",
}


# --------------------------------------------------------------------------------------------
# small pure helpers


def newest_frame(obs: np.ndarray, stack: int) -> np.ndarray:
    """The newest frame of an observation stacked along axis 0 (newest frame last)."""
    if stack == 1:
        return obs
    return obs[-(obs.shape[0] // stack):]


def stack_positions(pos: np.ndarray, stack: int) -> np.ndarray:
    """Episode positions of the frames forming the stacked obs at ``pos``: shape pos.shape+(stack,).

    Oldest first; positions before the episode start clamp to 0 (repeat the first frame).
    """
    return np.maximum(np.asarray(pos)[..., None] + np.arange(1 - stack, 1), 0)


def truncated_geometric(rng: np.random.Generator, gamma: float, max_offset: np.ndarray) -> np.ndarray:
    """Offsets d in 1..D (D = max_offset >= 1, elementwise) with P(d) proportional to gamma^d.

    Inverse CDF: F(d) = (1 - gamma^d) / (1 - gamma^D), so d = 1 + floor(log(1 - u(1 - gamma^D)) /
    log gamma) for u ~ U[0, 1). gamma = 1 is uniform on 1..D, gamma = 0 always gives 1.
    """
    D = np.asarray(max_offset, dtype=np.int64)
    u = rng.random(D.shape)
    if gamma >= 1.0:
        d = 1 + np.floor(u * D)
    elif gamma <= 0.0:
        d = np.ones(D.shape)
    else:
        log_g = np.log(gamma)
        mass = -np.expm1(D * log_g)  # 1 - gamma^D
        d = 1 + np.floor(np.log1p(-u * mass) / log_g)
    return np.clip(d.astype(np.int64), 1, D)


def _storage_dtype(dtype: np.dtype) -> np.dtype:
    return np.dtype(np.float32) if dtype == np.float64 else np.dtype(dtype)


def _to_torch(batch: dict[str, Any], device: Any) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in batch.items():
        tensor = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(value))
        out[key] = tensor if device is None else tensor.to(device, non_blocking=True)
    return out


def _same_device(device: Any) -> torch.device:
    """``device`` with its index filled in ("cuda" and "cuda:0" name one GPU)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


class NothingToSample(ValueError):
    """The replay holds nothing that this kind of batch can be drawn from yet (e.g. goal batches
    before the first episode has finished)."""


def _draw(rng: np.random.Generator, counts: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Uniform draw over all (row, position) pairs with ``counts[row]`` positions per row."""
    cum = np.cumsum(counts)
    total = int(cum[-1]) if len(cum) else 0
    if total == 0:
        raise NothingToSample("replay has nothing to sample for this request yet")
    u = rng.integers(0, total, size=batch_size)
    rows = np.searchsorted(cum, u, side="right")
    return rows, u - (cum[rows] - counts[rows])


def _pcg64_to_array(rng: np.random.Generator) -> np.ndarray | None:
    state = rng.bit_generator.state
    if state.get("bit_generator") != "PCG64":
        return None
    mask = (1 << 64) - 1
    s, inc = state["state"]["state"], state["state"]["inc"]
    return np.array([s >> 64, s & mask, inc >> 64, inc & mask, state["has_uint32"], state["uinteger"]],
                    dtype=np.uint64)


def _array_to_pcg64(a: np.ndarray) -> np.random.Generator:
    v = [int(x) for x in a]
    rng = np.random.Generator(np.random.PCG64())
    rng.bit_generator.state = {
        "bit_generator": "PCG64",
        "state": {"state": (v[0] << 64) | v[1], "inc": (v[2] << 64) | v[3]},
        "has_uint32": v[4], "uinteger": v[5],
    }
    return rng


# --------------------------------------------------------------------------------------------


class EpisodeReplay:
    """Episodic store (each frame once) with n-step, sequence and goal-relabelling samplers.

    Args:
        capacity: stored frames (observations), split evenly among streams.
        frame_stack: stack size of the incoming observations, an int for every field or a mapping
            ``{field: stack}`` (missing fields: 1).
        num_streams: concurrent streams (vector-env copies); each owns ``capacity // num_streams``.
        seed: seed of the sampling RNG (``self.rng``, saved in ``state_dict``).
    """

    def __init__(self, capacity: int, frame_stack: int | Mapping[str, int] = 1, num_streams: int = 1,
                 seed: int | None = None):
        if num_streams < 1 or capacity < 2 * num_streams:
            raise ValueError(f"need capacity >= 2 frames per stream, got {capacity} for {num_streams}")
        self.num_streams = int(num_streams)
        self.stream_capacity = int(capacity) // self.num_streams
        self.capacity = self.stream_capacity * self.num_streams
        self._frame_stack_arg = frame_stack
        self.rng = np.random.default_rng(seed)
        self._frames_device: torch.device | None = None  # see keep_frames_on
        self._frames_device_budget: int | None = None
        self._reset_storage()

    # ---- bookkeeping -----------------------------------------------------------------------

    def _reset_storage(self) -> None:
        self._stack: dict[str, int] = {}       # obs field -> frame stack (empty until first obs)
        self._frames: dict[str, np.ndarray] = {}
        self._device_frames: dict[str, torch.Tensor] = {}  # copies on _frames_device, if any
        self._dict_obs: bool | None = None
        self._steps: dict[str, np.ndarray] = {}  # step field -> (capacity, ...) array
        self._ep = {name: np.zeros(16, dtype) for name, dtype in
                    [("serial", np.int64), ("stream", np.int64), ("start", np.int64),
                     ("length", np.int64), ("done", bool)]}
        self._n_eps = 0
        self._written = np.zeros(self.num_streams, np.int64)  # frames ever written per stream
        self._tail = np.zeros(self.num_streams, np.int64)     # first live frame per stream
        self._current = np.full(self.num_streams, -1, np.int64)  # row of the open episode
        self._next_serial = 0

    def _col(self, name: str) -> np.ndarray:
        return self._ep[name][: self._n_eps]

    def __len__(self) -> int:
        """Stored transitions (steps)."""
        return int(self._col("length").sum())

    @property
    def num_frames(self) -> int:
        return int((self._col("length") + 1).sum())

    @property
    def num_episodes(self) -> int:
        """Live episodes, the unfinished ones included."""
        return self._n_eps

    @property
    def episode_ids(self) -> np.ndarray:
        """Serial numbers (in creation order) of the live episodes."""
        return self._col("serial").copy()

    @property
    def episode_lengths(self) -> np.ndarray:
        return self._col("length").copy()

    @property
    def obs_fields(self) -> dict[str, int]:
        """Observation fields and their frame stacks."""
        return dict(self._stack)

    @property
    def nbytes(self) -> int:
        """Bytes held by the preallocated storage and the episode table."""
        arrays = [*self._frames.values(), *self._steps.values(), *self._ep.values()]
        return int(sum(a.nbytes for a in arrays))

    def _slots(self, rows: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """Storage slot of position ``pos`` (broadcast over trailing dims) of episode rows."""
        rows, pos = np.asarray(rows), np.asarray(pos)
        shape = rows.shape + (1,) * (pos.ndim - rows.ndim)
        base = (self._ep["stream"][rows] * self.stream_capacity).reshape(shape)
        start = self._ep["start"][rows].reshape(shape)
        return base + (start + pos) % self.stream_capacity

    def _rows_of(self, episodes: np.ndarray) -> np.ndarray:
        serial = self._col("serial")
        episodes = np.asarray(episodes, np.int64)
        if self._n_eps == 0:
            raise KeyError("the replay holds no episodes")
        rows = np.minimum(np.searchsorted(serial, episodes), self._n_eps - 1)
        if np.any(serial[rows] != episodes):
            raise KeyError(f"episodes not in the replay (evicted or never added): {episodes}")
        return rows

    def _stream(self, stream: int) -> int:
        if not 0 <= stream < self.num_streams:
            raise ValueError(f"stream {stream} out of range: replay has {self.num_streams} streams")
        return int(stream)

    # ---- schema ----------------------------------------------------------------------------

    def _parse(self, obs: Any) -> tuple[dict[str, np.ndarray], bool]:
        """Observation -> ({field: array}, is_dict), checked against the stored fields."""
        is_dict = isinstance(obs, Mapping)
        fields = {k: np.asarray(v) for k, v in obs.items()} if is_dict else {OBS_FIELD: np.asarray(obs)}
        if self._dict_obs is not None and (is_dict != self._dict_obs or set(fields) != set(self._stack)):
            raise ValueError(f"observation fields {sorted(fields)} differ from the stored "
                             f"{sorted(self._stack)}")
        return fields, is_dict

    def _stack_of(self, name: str) -> int:
        arg = self._frame_stack_arg
        return int(arg.get(name, 1)) if isinstance(arg, Mapping) else int(arg)

    def _init_obs(self, frames: dict[str, np.ndarray], is_dict: bool) -> None:
        """Allocate frame storage from one example frame per field (np.empty: pages untouched)."""
        for name, frame in frames.items():
            if name in _RESERVED or name.startswith("next_"):
                raise ValueError(f"observation field name {name!r} is reserved")
        for name, frame in frames.items():
            self._stack[name] = self._stack_of(name)
            self._frames[name] = np.empty((self.capacity, *frame.shape), _storage_dtype(frame.dtype))
        self._dict_obs = is_dict
        self._copy_frames_to_device(empty=True)

    def _newest_frames(self, fields: dict[str, np.ndarray], is_dict: bool,
                       stacked: bool = True) -> dict[str, np.ndarray]:
        """Newest frame of each field of one observation; the first call allocates storage."""
        frames = {}
        for name, obs in fields.items():
            k = self._stack[name] if name in self._stack else self._stack_of(name)
            if stacked and k > 1 and (obs.ndim == 0 or obs.shape[0] % k):
                raise ValueError(f"field {name!r} of shape {obs.shape} is not a stack of {k} frames "
                                 "along axis 0 (for dict observations pass frame_stack as a mapping)")
            frames[name] = newest_frame(obs, k) if stacked else obs
        if self._dict_obs is None:
            self._init_obs(frames, is_dict)
        for name, frame in frames.items():
            if frame.shape != self._frames[name].shape[1:]:
                raise ValueError(f"field {name!r}: frame shape {frame.shape} differs from the stored "
                                 f"{self._frames[name].shape[1:]}")
        return frames

    def _init_steps(self, action: np.ndarray, extras: dict[str, np.ndarray]) -> None:
        self._steps = {
            "action": np.empty((self.capacity, *action.shape), _storage_dtype(action.dtype)),
            "reward": np.empty(self.capacity, np.float32),
            "terminated": np.empty(self.capacity, bool),
            "truncated": np.empty(self.capacity, bool),
        }
        for name, value in extras.items():
            if name in _RESERVED or name in self._stack or name.startswith("next_"):
                raise ValueError(f"extra field name {name!r} clashes with a reserved or obs name")
            self._steps[name] = np.empty((self.capacity, *value.shape), _storage_dtype(value.dtype))

    def _extra_names(self) -> list[str]:
        return [name for name in self._steps if name not in STEP_FIELDS]

    def _check_extras(self, extras: Mapping[str, Any] | None) -> dict[str, np.ndarray]:
        extras = {k: np.asarray(v) for k, v in (extras or {}).items()}
        if self._steps:
            expected = set(self._extra_names())
            if set(extras) != expected:
                raise ValueError(f"extras {sorted(extras)} differ from the stored {sorted(expected)}")
        return extras

    # ---- episode table ---------------------------------------------------------------------

    def _append_row(self, stream: int, start: int) -> int:
        if self._n_eps == len(self._ep["serial"]):
            self._ep = {k: np.concatenate([v, np.zeros_like(v)]) for k, v in self._ep.items()}
        row = self._n_eps
        for name, value in [("serial", self._next_serial), ("stream", stream), ("start", start),
                            ("length", 0), ("done", False)]:
            self._ep[name][row] = value
        self._n_eps += 1
        self._next_serial += 1
        return row

    def _evict_oldest(self, stream: int) -> None:
        """Drop the oldest whole episode of ``stream``."""
        rows = np.flatnonzero(self._col("stream") == stream)
        if len(rows) == 0 or rows[0] == self._current[stream]:
            raise ValueError(f"episode too long for the replay: stream {stream} holds at most "
                             f"{self.stream_capacity} frames (capacity {self.capacity} over "
                             f"{self.num_streams} streams)")
        row = rows[0]
        keep = np.ones(len(self._ep["serial"]), bool)
        keep[row] = False
        self._ep = {k: np.concatenate([v[keep], np.zeros(1, v.dtype)]) for k, v in self._ep.items()}
        self._n_eps -= 1
        self._current[self._current > row] -= 1
        self._tail[stream] = self._ep["start"][rows[1] - 1] if len(rows) > 1 else self._written[stream]

    def _make_room(self, stream: int, n_frames: int) -> None:
        if n_frames > self.stream_capacity:
            raise ValueError(f"episode of {n_frames} frames exceeds the {self.stream_capacity} "
                             f"frames of one stream")
        while self._written[stream] + n_frames - self._tail[stream] > self.stream_capacity:
            self._evict_oldest(stream)

    # ---- adding data -----------------------------------------------------------------------

    def add_first(self, obs: Any, stream: int = 0) -> None:
        """Start an episode with its first (reset) observation.

        If ``stream`` still has an episode open, it is closed as truncated (or replaced when it has
        no steps yet).
        """
        s = self._stream(stream)
        frames = self._newest_frames(*self._parse(obs))
        row = self._current[s]
        if row >= 0 and self._ep["length"][row] == 0:
            self._write_frames(frames, self._slots(row, 0))
            return
        if row >= 0:
            last = self._slots(row, self._ep["length"][row] - 1)
            self._steps["truncated"][last] = True
            self._ep["done"][row] = True
            self._current[s] = -1
        self._make_room(s, 1)
        row = self._append_row(s, self._written[s])
        self._write_frames(frames, self._slots(row, 0))
        self._written[s] += 1
        self._current[s] = row

    def add(self, action: Any, reward: float, next_obs: Any, terminated: bool, truncated: bool,
            stream: int = 0, extras: Mapping[str, Any] | None = None) -> None:
        """Append one step (action, reward, flags and extras of step t; next_obs is obs t+1)."""
        s = self._stream(stream)
        if self._current[s] < 0:
            raise RuntimeError(f"stream {s} has no open episode: call add_first(obs) after a reset")
        action = np.asarray(action)
        extras = self._check_extras(extras)
        frames = self._newest_frames(*self._parse(next_obs))
        if not self._steps:
            self._init_steps(action, extras)
        self._make_room(s, 1)  # may evict older episodes, which renumbers rows
        row = self._current[s]
        length = self._ep["length"][row]
        src, dst = self._slots(row, length), self._slots(row, length + 1)
        self._write_steps(src, action=action, reward=reward, terminated=bool(terminated),
                          truncated=bool(truncated), **extras)
        self._write_frames(frames, dst)
        self._ep["length"][row] = length + 1
        self._written[s] += 1
        if terminated or truncated:
            self._ep["done"][row] = True
            self._current[s] = -1

    def add_episode(self, observations: Any, actions: Any, rewards: Any, terminated: Any = None,
                    truncated: Any = None, extras: Mapping[str, Any] | None = None, stream: int = 0,
                    stacked: bool = False) -> int:
        """Bulk-load one whole episode of T steps; returns its serial id.

        ``observations``: obs_0 .. obs_T (T + 1 entries, an array or a dict of arrays), single
        frames (``stacked=False``) or stacked observations (``stacked=True``). ``actions``,
        ``rewards``, flags and extras have T entries; flags may be None (all False). Only the last
        step may be terminated/truncated; if neither is, it is marked truncated.
        """
        s = self._stream(stream)
        if self._current[s] >= 0:
            raise ValueError(f"stream {s} has an episode in progress; load into another stream")
        fields, is_dict = self._parse(observations)
        actions = np.asarray(actions)
        T = len(actions)
        if T < 1:
            raise ValueError("an episode needs at least one step")
        flags = {}
        for name, value in [("terminated", terminated), ("truncated", truncated)]:
            flags[name] = np.zeros(T, bool) if value is None else np.asarray(value, bool).reshape(T).copy()
        if np.any(flags["terminated"][:-1] | flags["truncated"][:-1]):
            raise ValueError("terminated/truncated before the last step: split the episode there")
        if not (flags["terminated"][-1] or flags["truncated"][-1]):
            flags["truncated"][-1] = True
        rewards = np.asarray(rewards, np.float32).reshape(T)
        extras = {k: np.asarray(v) for k, v in (extras or {}).items()}
        for name, value in fields.items():
            if len(value) != T + 1:
                raise ValueError(f"observation field {name!r} has {len(value)} entries, need T+1={T + 1}")
        for name, value in extras.items():
            if len(value) != T:
                raise ValueError(f"extra {name!r} has {len(value)} entries, need T={T}")
        self._newest_frames({n: v[0] for n, v in fields.items()}, is_dict, stacked)
        first_extras = self._check_extras({k: v[0] for k, v in extras.items()})
        if not self._steps:
            self._init_steps(actions[0], first_extras)
        self._make_room(s, T + 1)
        row = self._append_row(s, self._written[s])
        slots = self._slots(row, np.arange(T + 1))
        for name, value in fields.items():
            k = self._stack[name]
            frames = value[:, -(value.shape[1] // k):] if stacked and k > 1 else value
            if frames.shape[1:] != self._frames[name].shape[1:]:
                raise ValueError(f"field {name!r}: frames of shape {frames.shape[1:]} differ from the "
                                 f"stored {self._frames[name].shape[1:]}")
            self._store_frames(name, slots, frames)
        self._write_steps(slots[:T], action=actions, reward=rewards, **flags, **extras)
        self._ep["length"][row] = T
        self._ep["done"][row] = True
        self._written[s] += T + 1
        return int(self._ep["serial"][row])

    def _write_frames(self, frames: dict[str, np.ndarray], slot) -> None:
        for name, frame in frames.items():
            self._store_frames(name, slot, frame)

    def _store_frames(self, name: str, slots, frames: np.ndarray) -> None:
        self._frames[name][slots] = frames
        if name in self._device_frames:  # the stored (dtype-converted) values, a few KB per step
            device = self._frames_device
            # an int, not a 0-d tensor, for one slot: indexing by a 0-d CUDA tensor waits for the GPU
            index = int(slots) if np.ndim(slots) == 0 else torch.from_numpy(np.asarray(slots, np.int64)).to(device)
            self._device_frames[name][index] = torch.as_tensor(np.asarray(self._frames[name][slots])).to(device)

    # ---- frames on the training device -----------------------------------------------------

    def keep_frames_on(self, device: Any, max_bytes: int | None = None) -> None:
        """Also hold every stored frame on ``device`` (a GPU), so that batches of every kind
        sampled for that device gather their observations there: no gather on the host and no
        host-to-device copy of each batch's frames, which on an H200 took as long as DrQ-v2's whole
        update (BENCHMARKS.md, "Where the training loop's time goes"). The host arrays remain the
        store of record (checkpoints, episodes, batches for other devices). With ``max_bytes``,
        frames that would need more on the device (or that it has no memory for) stay on the host
        only, with a warning. ``None`` drops the device copy."""
        self._frames_device = None if device is None else _same_device(device)
        self._frames_device_budget = max_bytes
        self._copy_frames_to_device(empty=False)

    @property
    def frames_on_device(self) -> torch.device | None:
        """The device holding a copy of the frames (None: host only, or not allocated yet)."""
        return self._frames_device if self._device_frames else None

    def _copy_frames_to_device(self, empty: bool) -> None:
        """(Re)build the device copies of the frame arrays: empty ones at allocation, full copies
        after a load or when asked for later."""
        self._device_frames = {}
        if self._frames_device is None or not self._frames:
            return
        need = sum(a.nbytes for a in self._frames.values())
        if self._frames_device_budget is not None and need > self._frames_device_budget:
            warnings.warn(f"replay frames ({need / 2**30:.1f} GiB) exceed the {self._frames_device_budget / 2**30:.1f} "
                          f"GiB allowed on {self._frames_device}: batches are gathered on the host and copied",
                          stacklevel=3)
            return
        try:
            for name, frames in self._frames.items():
                if empty:
                    dtype = torch.from_numpy(frames[:0]).dtype
                    self._device_frames[name] = torch.empty(frames.shape, dtype=dtype, device=self._frames_device)
                else:  # a copy also where the device is the CPU (tests): never the host array itself
                    self._device_frames[name] = torch.from_numpy(frames).to(self._frames_device, copy=True)
        except torch.cuda.OutOfMemoryError:
            if self._frames_device_budget is None:
                raise
            self._device_frames = {}
            warnings.warn(f"no memory on {self._frames_device} for the replay frames ({need / 2**30:.1f} GiB): "
                          "batches are gathered on the host and copied", stacklevel=3)

    def _gathers_on(self, device: Any) -> bool:
        return device is not None and bool(self._device_frames) and _same_device(device) == self._frames_device

    def _write_steps(self, slot, **values) -> None:
        for name, value in values.items():
            target = self._steps[name]
            value = np.asarray(value)
            if value.shape != target[slot].shape:
                raise ValueError(f"step field {name!r}: shape {value.shape} differs from the stored "
                                 f"{target.shape[1:]} per step")
            target[slot] = value

    # ---- gathering -------------------------------------------------------------------------

    def _obs_at(self, name: str, rows: np.ndarray, pos: np.ndarray, stacked: bool = True,
                on_device: bool = False) -> Any:
        """Observation field ``name`` at episode positions ``pos`` (shape rows.shape + P): a numpy
        array, or with ``on_device`` a tensor gathered from the device copy of the frames."""
        k = self._stack[name] if stacked else 1
        slots = self._slots(rows, stack_positions(pos, k) if k > 1 else pos)
        if on_device:
            frames = self._device_frames[name]
            index = torch.from_numpy(slots.reshape(-1)).to(frames.device)
            out = frames.index_select(0, index).reshape(slots.shape + tuple(frames.shape[1:]))
        else:
            frames = self._frames[name]
            out = np.take(frames, slots, axis=0)
        if k == 1:
            return out
        return out.reshape(np.shape(pos) + (k * frames.shape[1],) + tuple(frames.shape[2:]))

    def _step_at(self, name: str, rows: np.ndarray, pos: np.ndarray) -> np.ndarray:
        return np.take(self._steps[name], self._slots(rows, pos), axis=0)

    def _select(self, fields: Any) -> list[str]:
        if fields is None:
            return list(self._stack)
        names = [fields] if isinstance(fields, str) else list(fields)
        unknown = set(names) - set(self._stack)
        if unknown:
            raise KeyError(f"unknown observation fields {sorted(unknown)}; have {sorted(self._stack)}")
        return names

    def _gather_transitions(self, rows, t, n_step, gamma, fields, on_device: bool = False) -> dict[str, Any]:
        length = self._ep["length"][rows]
        if np.any(t < 0) or np.any(t >= length):
            raise IndexError("step index outside its episode")
        m = np.minimum(n_step, length - t)
        k = np.arange(n_step)
        valid = k < m[:, None]
        window = np.minimum(t[:, None] + k, length[:, None] - 1)
        rewards = np.where(valid, self._step_at("reward", rows, window), 0.0)
        terminated = np.any(valid & self._step_at("terminated", rows, window), axis=1)
        batch = {}
        for name in self._select(fields):
            batch[name] = self._obs_at(name, rows, t, on_device=on_device)
            batch["next_" + name] = self._obs_at(name, rows, t + m, on_device=on_device)
        batch["action"] = self._step_at("action", rows, t)
        batch["reward"] = (rewards @ (float(gamma) ** k)).astype(np.float32)
        batch["discount"] = (float(gamma) ** m * ~terminated).astype(np.float32)
        batch["terminated"] = terminated.astype(np.float32)
        batch["steps"] = m.astype(np.int64)
        for name in self._extra_names():
            batch[name] = self._step_at(name, rows, t)
        return batch

    def transitions_at(self, episodes: Any, steps: Any, n_step: int = 1, gamma: float = 0.99,
                       fields: Any = None) -> dict[str, np.ndarray]:
        """n-step transitions at given (episode serial, step) pairs, as numpy arrays.

        No completeness check: in an unfinished episode the window stops at the current end.
        """
        rows = self._rows_of(episodes)
        return self._gather_transitions(rows, np.asarray(steps, np.int64), n_step, gamma, fields)

    def get_episode(self, episode: int, stacked: bool = False) -> dict[str, np.ndarray]:
        """All data of one episode: obs fields (T+1, ...), steps (T, ...), and ``done``."""
        row = self._rows_of(np.array([episode]))
        length = int(self._ep["length"][row[0]])
        obs_pos, step_pos = np.arange(length + 1)[None], np.arange(length)[None]
        out = {n: self._obs_at(n, row, obs_pos, stacked)[0] for n in self._stack}
        out.update({n: self._step_at(n, row, step_pos)[0] for n in self._steps})
        out["done"] = np.array(self._ep["done"][row[0]])
        return out

    # ---- samplers --------------------------------------------------------------------------

    def _window_counts(self, window: int, finished_truncate: bool) -> np.ndarray:
        """Drawable start steps per episode for windows of ``window`` steps."""
        length, done = self._col("length"), self._col("done")
        complete = np.maximum(length - window + 1, 0)
        return np.where(done & finished_truncate, length, complete)

    def _finish(self, batch, rows, pos, return_index, device):
        if return_index:
            batch["episode"] = self._ep["serial"][rows].astype(np.int64)
            batch["step"] = np.asarray(pos, np.int64)
        return _to_torch(batch, device)

    def sample_transitions(self, batch_size: int, n_step: int = 1, gamma: float = 0.99, *,
                           fields: Any = None, device: Any = None, rng: np.random.Generator | None = None,
                           return_index: bool = False) -> dict[str, torch.Tensor]:
        """n-step transitions, uniform over drawable steps.

        Keys (B = batch_size): for each obs field f (array obs: f = "obs") ``f`` and ``next_f``
        (B, *stacked shape) at t and t+m; ``action`` (B, *action shape); ``reward``, ``discount``,
        ``terminated`` (B,) float32; ``steps`` (B,) int64 = m; each extra (B, ...) at t;
        with ``return_index`` also ``episode`` (serial) and ``step`` (t), int64.
        """
        rng = self.rng if rng is None else rng
        rows, t = _draw(rng, self._window_counts(n_step, True), batch_size)
        batch = self._gather_transitions(rows, t, n_step, gamma, fields, on_device=self._gathers_on(device))
        return self._finish(batch, rows, t, return_index, device)

    def sample_sequences(self, batch_size: int, length: int, *, pad: bool = True, stacked: bool = True,
                         fields: Any = None, device: Any = None, rng: np.random.Generator | None = None,
                         return_index: bool = False) -> dict[str, torch.Tensor]:
        """Windows of ``length`` steps (L) starting at a uniformly drawn step t.

        Keys: each obs field (B, L+1, *shape) at t..t+L (stacked, or the single newest frame with
        ``stacked=False``); ``action`` (B, L, ...); ``reward``, ``terminated``, ``truncated``,
        ``mask`` (B, L) float32; ``obs_mask``, ``is_first`` (B, L+1) float32; extras (B, L, ...).
        ``mask`` is 0 on steps past the episode end (only with ``pad=True``, in finished episodes).
        """
        rng = self.rng if rng is None else rng
        rows, t = _draw(rng, self._window_counts(length, pad), batch_size)
        ep_len = self._ep["length"][rows][:, None]
        m = np.minimum(length, ep_len - t[:, None])
        obs_pos = t[:, None] + np.arange(length + 1)
        step_pos = t[:, None] + np.arange(length)
        step_mask = step_pos - t[:, None] < m
        on_device = self._gathers_on(device)
        batch = {n: self._obs_at(n, rows, np.minimum(obs_pos, ep_len), stacked, on_device) for n in self._select(fields)}
        clipped = np.minimum(step_pos, ep_len - 1)
        for name in self._steps:
            values = self._step_at(name, rows, clipped)
            mask = step_mask.reshape(step_mask.shape + (1,) * (values.ndim - 2))
            values = np.where(mask, values, np.zeros((), values.dtype))
            batch[name] = values.astype(np.float32) if values.dtype == bool else values
        batch["mask"] = step_mask.astype(np.float32)
        batch["obs_mask"] = (obs_pos - t[:, None] <= m).astype(np.float32)
        batch["is_first"] = (obs_pos == 0).astype(np.float32)
        return self._finish(batch, rows, t, return_index, device)

    def default_goal_field(self) -> str:
        if "achieved_goal" in self._stack:
            return "achieved_goal"
        if len(self._stack) == 1:
            return next(iter(self._stack))
        raise ValueError(f"choose goal_field among {sorted(self._stack)}")

    def sample_goals(self, batch_size: int, gamma: float = 0.99, *, goal_field: str | None = None,
                     random_goal_prob: float = 0.0, include_unfinished: bool = False, fields: Any = None,
                     device: Any = None, rng: np.random.Generator | None = None,
                     return_index: bool = False) -> dict[str, torch.Tensor]:
        """Goal-relabelled transitions (i, a_i, i+1) with a future goal from the same episode.

        Goal = field ``goal_field`` (default ``achieved_goal``, else the only obs field) of
        observation j = i + d, d in 1..T-i, P(d) proportional to gamma^d; with probability
        ``random_goal_prob`` a uniformly random stored observation instead.
        Keys: each obs field f and ``next_f`` (B, ...); ``action``; ``reward``, ``terminated``
        (B,) float32; extras at i; ``goal`` (B, *goal shape); ``goal_offset`` (B,) int64 = j - i,
        or -1 for random goals.
        """
        rng = self.rng if rng is None else rng
        goal_field = self.default_goal_field() if goal_field is None else goal_field
        self._select(goal_field)
        length, done = self._col("length"), self._col("done")
        rows, i = _draw(rng, np.where(done | include_unfinished, length, 0), batch_size)
        offset = truncated_geometric(rng, gamma, self._ep["length"][rows] - i)
        goal_rows, goal_pos = rows, i + offset
        if random_goal_prob > 0:
            is_random = rng.random(batch_size) < random_goal_prob
            r_rows, r_pos = _draw(rng, length + 1, batch_size)
            goal_rows = np.where(is_random, r_rows, rows)
            goal_pos = np.where(is_random, r_pos, goal_pos)
            offset = np.where(is_random, -1, offset)
        batch = {}
        on_device = self._gathers_on(device)
        for name in self._select(fields):
            batch[name] = self._obs_at(name, rows, i, on_device=on_device)
            batch["next_" + name] = self._obs_at(name, rows, i + 1, on_device=on_device)
        batch["action"] = self._step_at("action", rows, i)
        batch["reward"] = self._step_at("reward", rows, i).astype(np.float32)
        batch["terminated"] = self._step_at("terminated", rows, i).astype(np.float32)
        for name in self._extra_names():
            batch[name] = self._step_at(name, rows, i)
        batch["goal"] = self._obs_at(goal_field, goal_rows, goal_pos, on_device=on_device)
        batch["goal_offset"] = offset.astype(np.int64)
        return self._finish(batch, rows, i, return_index, device)

    def sample(self, batch_size: int, kind: str = "transitions", **kwargs) -> dict[str, torch.Tensor]:
        """Dispatch on the batch kind an agent names: transitions, sequences or goals."""
        samplers = {"transitions": self.sample_transitions, "sequences": self.sample_sequences,
                    "goals": self.sample_goals}
        if kind not in samplers:
            raise ValueError(f"unknown batch kind {kind!r}; expected one of {sorted(samplers)}")
        return samplers[kind](batch_size, **kwargs)

    # ---- checkpointing ---------------------------------------------------------------------

    def state_dict(self) -> dict[str, np.ndarray]:
        """Live data and counters as numpy arrays only (no Python objects).

        Keys: ``meta/*`` (capacity, streams, counters, frame stacks), ``episodes/*`` (table in
        creation order), ``frames/<field>`` (every live frame, episode after episode),
        ``steps/<name>`` (every live step, likewise), ``rng/pcg64`` (sampling RNG state).
        """
        n = self._n_eps
        sd = {
            "meta/capacity": np.array(self.capacity, np.int64),
            "meta/num_streams": np.array(self.num_streams, np.int64),
            "meta/written": self._written.copy(),
            "meta/tail": self._tail.copy(),
            "meta/current": self._current.copy(),
            "meta/next_serial": np.array(self._next_serial, np.int64),
        }
        # the frame stack asked for, which an empty replay has not yet applied to any field
        if isinstance(self._frame_stack_arg, Mapping):
            sd.update({f"meta/frame_stack_arg/{name}": np.array(stack, np.int64)
                       for name, stack in self._frame_stack_arg.items()})
        else:
            sd["meta/frame_stack_arg"] = np.array(self._frame_stack_arg, np.int64)
        sd.update({f"episodes/{k}": v[:n].copy() for k, v in self._ep.items()})
        if self._dict_obs is not None:
            sd["meta/dict_obs"] = np.array(self._dict_obs)
            rows, pos = self._flat_positions(extra=1)
            for name, stack in self._stack.items():
                sd[f"meta/frame_stack/{name}"] = np.array(stack, np.int64)
                sd[f"frames/{name}"] = np.take(self._frames[name], self._slots(rows, pos), axis=0)
        if self._steps:
            rows, pos = self._flat_positions(extra=0)
            for name, array in self._steps.items():
                sd[f"steps/{name}"] = np.take(array, self._slots(rows, pos), axis=0)
        rng_state = _pcg64_to_array(self.rng)
        if rng_state is not None:
            sd["rng/pcg64"] = rng_state
        return sd

    def _flat_positions(self, extra: int) -> tuple[np.ndarray, np.ndarray]:
        """(row, position) of every live frame (extra=1) or step (extra=0), episode after episode."""
        counts = self._col("length") + extra
        rows = np.repeat(np.arange(self._n_eps), counts)
        starts = np.cumsum(counts) - counts
        return rows, np.arange(int(counts.sum())) - np.repeat(starts, counts)

    def load_state_dict(self, sd: Mapping[str, np.ndarray]) -> None:
        """Restore exactly what ``state_dict`` saved (capacity and streams included)."""
        self.num_streams = int(sd["meta/num_streams"])
        self.capacity = int(sd["meta/capacity"])
        self.stream_capacity = self.capacity // self.num_streams
        self._reset_storage()
        self._written = np.array(sd["meta/written"], np.int64)
        self._tail = np.array(sd["meta/tail"], np.int64)
        self._current = np.array(sd["meta/current"], np.int64)
        self._next_serial = int(sd["meta/next_serial"])
        prefix = "meta/frame_stack_arg/"
        by_field = {key[len(prefix):]: int(sd[key]) for key in sd if key.startswith(prefix)}
        if by_field or "meta/frame_stack_arg" in sd:  # older checkpoints: keep the constructor's
            self._frame_stack_arg = by_field or int(sd["meta/frame_stack_arg"])
        n = len(sd["episodes/serial"])
        self._ep = {k: np.concatenate([np.asarray(sd[f"episodes/{k}"], v.dtype), np.zeros(max(n, 16), v.dtype)])
                    for k, v in self._ep.items()}
        self._n_eps = n
        if "meta/dict_obs" in sd:
            self._dict_obs = bool(sd["meta/dict_obs"])
            rows, pos = self._flat_positions(extra=1)
            slots = self._slots(rows, pos)
            for key in sd:
                if key.startswith("frames/"):
                    name = key[len("frames/"):]
                    data = np.asarray(sd[key])
                    self._stack[name] = int(sd[f"meta/frame_stack/{name}"])
                    self._frames[name] = np.empty((self.capacity, *data.shape[1:]), data.dtype)
                    self._frames[name][slots] = data
        self._copy_frames_to_device(empty=False)
        step_keys = [k for k in sd if k.startswith("steps/")]
        if step_keys:
            rows, pos = self._flat_positions(extra=0)
            slots = self._slots(rows, pos)
            for key in step_keys:
                data = np.asarray(sd[key])
                array = np.empty((self.capacity, *data.shape[1:]), data.dtype)
                array[slots] = data
                self._steps[key[len("steps/"):]] = array
        if "rng/pcg64" in sd:
            self.rng = _array_to_pcg64(np.asarray(sd["rng/pcg64"]))

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, np.ndarray]) -> "EpisodeReplay":
        replay = cls(int(sd["meta/capacity"]), num_streams=int(sd["meta/num_streams"]))
        replay.load_state_dict(sd)
        return replay
