"""Run logging: CSV + TensorBoard scalars, a console progress bar, videos, curves, config files.

A run directory holds ``config.yaml``, ``train.csv``, ``eval.csv``, ``tb/``, ``checkpoints/`` and
optionally ``videos/``. CSV rows carry the three step counters (``frames``, ``agent_steps``,
``updates``), ``wall_time`` (seconds since the run began, continued across resumes) and then the
metrics in the order they first appeared.
"""

from __future__ import annotations

import csv
import io
import math
import os
import sys
import textwrap
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from crl.fileio import atomic_path, atomic_write_bytes

__all__ = [
    "COUNTERS",
    "Logger",
    "Progress",
    "save_video",
    "plot_curves",
    "write_config",
    "read_config",
    "read_csv",
]

COUNTERS = ("frames", "agent_steps", "updates")
_FIXED = COUNTERS + ("wall_time",)
KINDS = ("train", "eval")


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The header and the complete rows of a log CSV written before a crash (none for a missing
    or empty file, or one whose header was cut short): a last line cut short is left out, and so
    is any row without the header's width. NUL bytes after the end are what a crash leaves where
    a filesystem had allocated the file's tail, and count as a cut; anywhere else they, or text
    that is not UTF-8 CSV, are a ValueError naming the file."""
    if not path.exists() or path.stat().st_size == 0:
        return [], []
    try:
        text = path.read_text(encoding="utf-8").rstrip("\0")
        if "\0" in text:
            raise csv.Error("it holds NUL bytes")
        lines = list(io.StringIO(text, newline=""))  # split where the csv module splits
        if lines and not lines[-1].endswith(("\n", "\r")):
            lines = lines[:-1]  # cut short by a crash: its numbers may be truncated
        reader = csv.DictReader(lines)
        fields = list(reader.fieldnames or [])
        rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"{path} is not a readable CSV file: {e}") from None
    # DictReader files surplus cells under the key None and gives missing ones the value None
    return fields, [r for r in rows if None not in r and None not in r.values()]


def _ends_mid_line(path: Path) -> bool:
    """Whether a non-empty file's last line lacks its newline (a write cut short)."""
    if not path.exists() or path.stat().st_size == 0:
        return False
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) not in (b"\n", b"\r")


def _csv_bytes(fields: list[str], rows: list[Mapping[str, Any]]) -> bytes:
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=fields, restval="", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buf.getvalue().encode()


def _to_float(name: str, value: Any) -> float:
    try:
        if hasattr(value, "item"):  # tensors and numpy scalars
            value = value.item()
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"metric {name!r} must be a number, got {value!r}") from None


def _counter_of(row: Mapping[str, str], counter: str) -> float:
    try:
        return float(row.get(counter, "") or "nan")
    except ValueError:
        return math.nan


class Logger:
    """Writes ``{run_dir}/train.csv``, ``{run_dir}/eval.csv`` and TensorBoard scalars in ``tb/``.

    ``step_counter`` is the x axis: TensorBoard's global step and what ``resume_frames`` counts
    (``frames`` online; ``updates`` for offline runs, which take no env steps).

    A new Logger (``resume_frames=None``) starts the CSV files afresh (existing ones are
    replaced). With ``resume_frames=F`` it continues a run: rows with ``frames > F`` are dropped
    from both CSV files, and so are a last line cut short by a crash and rows of the wrong width;
    ``wall_time`` continues from the largest remaining value, and the TensorBoard writer purges
    events logged at steps after F (``purge_step=F + 1``: the points at exactly F, written before
    the checkpoint at F, stay, as they do in the CSV).
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        *,
        tensorboard: bool = True,
        resume_frames: int | None = None,
        step_counter: str = "frames",
    ):
        if step_counter not in COUNTERS:
            raise ValueError(f"step_counter must be one of {COUNTERS}, got {step_counter!r}")
        self.step_counter = step_counter
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.resume_frames = resume_frames
        self._fields: dict[str, list[str]] = {}
        self._files: dict[str, Any] = {}
        self._writers: dict[str, csv.DictWriter] = {}
        self._closed = False

        offset = 0.0
        self.last_logged: dict[str, float] = {}  # kind -> the counter of its last row kept on resuming
        for kind in KINDS:
            path = self.csv_path(kind)
            if resume_frames is None:
                if path.exists():
                    path.unlink()
                continue
            fields, rows = read_csv(path)
            if not fields:
                path.unlink(missing_ok=True)  # empty, or the header itself was cut short
                continue
            kept = [r for r in rows if _counter_of(r, step_counter) <= resume_frames]
            if path.read_bytes() != (clean := _csv_bytes(fields, kept)):  # rows past the checkpoint, or a cut
                atomic_write_bytes(path, clean)
            self._fields[kind] = fields
            if kept:
                self.last_logged[kind] = _counter_of(kept[-1], step_counter)
            for r in kept:
                try:
                    offset = max(offset, float(r.get("wall_time") or 0.0))
                except ValueError:
                    pass
        self._start = time.time() - offset

        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            purge = None if resume_frames is None else int(resume_frames) + 1
            if resume_frames is None:  # a fresh start: an earlier attempt's curves would be drawn with it
                for stale in (self.run_dir / "tb").glob("events.out.tfevents.*"):
                    stale.unlink()
            self.tb = SummaryWriter(log_dir=str(self.run_dir / "tb"), purge_step=purge)

    def csv_path(self, kind: str) -> Path:
        return self.run_dir / f"{kind}.csv"

    @property
    def wall_time(self) -> float:
        """Seconds since the run began (including time before any resume)."""
        return time.time() - self._start

    def _open(self, kind: str, fields: list[str]) -> None:
        path = self.csv_path(kind)
        new = not path.exists() or path.stat().st_size == 0
        f = open(path, "a", newline="")
        if not new and _ends_mid_line(path):
            f.write("\r\n")  # a row appended to an unfinished line would merge into it
        writer = csv.DictWriter(f, fieldnames=fields, restval="", extrasaction="raise")
        if new:
            writer.writeheader()
            f.flush()
        self._files[kind] = f
        self._writers[kind] = writer
        self._fields[kind] = fields

    def _close_file(self, kind: str) -> None:
        f = self._files.pop(kind, None)
        self._writers.pop(kind, None)
        if f is not None:
            f.close()

    def log(
        self,
        kind: str,
        counters: Mapping[str, int],
        metrics: Mapping[str, Any],
    ) -> None:
        """Append one row to ``{kind}.csv`` and write ``{kind}/{name}`` scalars at step=frames.

        ``counters`` must hold ``frames``, ``agent_steps`` and ``updates``. Metric values are
        numbers (Python, numpy or 0-d tensors); ``None`` leaves the cell blank and is not sent to
        TensorBoard. New metric names extend the columns (the file is rewritten with the union).
        """
        if self._closed:
            raise RuntimeError("Logger is closed")
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        missing = [c for c in COUNTERS if c not in counters]
        if missing:
            raise ValueError(f"counters lack {missing}; expected {list(COUNTERS)}")
        extra = [c for c in counters if c not in COUNTERS]
        if extra:
            raise ValueError(f"unknown counters {extra}; expected {list(COUNTERS)}")
        clash = [m for m in metrics if m in _FIXED]
        if clash:
            raise ValueError(f"metric names {clash} clash with the fixed columns {list(_FIXED)}")

        row: dict[str, Any] = {c: int(counters[c]) for c in COUNTERS}
        row["wall_time"] = round(self.wall_time, 3)
        values: dict[str, float | None] = {}
        for name, value in metrics.items():
            values[str(name)] = None if value is None else _to_float(str(name), value)
        row.update({k: ("" if v is None else repr(v)) for k, v in values.items()})

        fields = self._fields.get(kind)
        if fields is None:
            self._open(kind, list(_FIXED) + list(values))
        else:
            new_cols = [k for k in values if k not in fields]
            if new_cols:
                self._rewrite_with(kind, fields + new_cols)
            elif kind not in self._files:
                self._open(kind, fields)
        self._writers[kind].writerow(row)
        self._files[kind].flush()

        if self.tb is not None:
            step = row[self.step_counter]
            for name, v in values.items():
                if v is not None:
                    self.tb.add_scalar(f"{kind}/{name}", v, global_step=step)
            self.tb.flush()

    def _rewrite_with(self, kind: str, fields: list[str]) -> None:
        self._close_file(kind)
        path = self.csv_path(kind)
        _, rows = read_csv(path)
        atomic_write_bytes(path, _csv_bytes(fields, rows))
        self._open(kind, fields)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for kind in list(self._files):
            self._close_file(kind)
        if self.tb is not None:
            self.tb.flush()
            self.tb.close()

    def __enter__(self) -> "Logger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Progress:
    """A tqdm bar over frames: frames/s (tqdm's rate), plus whatever postfix is passed.

    ``Progress(total, initial=frames_already_done)``. ``update(frames_done, **postfix)`` takes
    the *total* frames done so far (not an increment); postfix values persist until replaced
    (``None`` hides one), so ``update(f, eval=...)`` once and ``update(f, updates=...)`` later
    shows both. Floats are shown with 4 significant digits. When stderr is not a terminal the bar redraws
    at most every ``non_tty_interval`` seconds so that log files stay short.
    """

    def __init__(
        self,
        total: int,
        *,
        initial: int = 0,
        desc: str | None = None,
        unit: str = "frame",
        disable: bool = False,
        file=None,
        non_tty_interval: float = 30.0,
    ):
        from tqdm import tqdm

        stream = file if file is not None else sys.stderr
        tty = bool(getattr(stream, "isatty", lambda: False)())
        self._postfix: dict[str, Any] = {}
        self.bar = tqdm(
            total=int(total),
            initial=int(initial),
            desc=desc,
            unit=unit,
            unit_scale=True,
            dynamic_ncols=tty,
            mininterval=0.5 if tty else non_tty_interval,
            file=stream,
            disable=disable,
            smoothing=0.1,
        )

    @property
    def n(self) -> int:
        return int(self.bar.n)

    def update(self, frames_done: int, **postfix: Any) -> None:
        for k, v in postfix.items():
            if v is None:  # e.g. no evaluation yet
                self._postfix.pop(k, None)
                continue
            if hasattr(v, "item"):
                v = v.item()
            if isinstance(v, float):
                v = f"{v:.4g}"
            self._postfix[k] = v
        if postfix:
            self.bar.set_postfix(self._postfix, refresh=False)
        delta = int(frames_done) - int(self.bar.n)
        if delta > 0:
            self.bar.update(delta)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# video


def _as_video_array(frames: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    arr = np.stack([np.asarray(f) for f in frames]) if not isinstance(frames, np.ndarray) else frames
    if arr.ndim == 3:  # T, H, W grayscale
        arr = arr[..., None]
    if arr.ndim != 4 or arr.shape[0] == 0:
        raise ValueError(
            f"video frames must be a non-empty sequence of HWC or CHW images, got shape {arr.shape}"
        )
    if arr.shape[-1] not in (1, 3, 4) and arr.shape[1] in (1, 3, 4):
        arr = arr.transpose(0, 2, 3, 1)  # CHW -> HWC
    if arr.shape[-1] not in (1, 3, 4):
        raise ValueError(f"video frames need 1, 3 or 4 channels, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise TypeError(f"video frames must be uint8, got {arr.dtype}")
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return np.ascontiguousarray(arr)


def save_video(path: str | os.PathLike, frames, fps: int = 30) -> Path:
    """Write uint8 frames (T x H x W x C, or T x C x H x W) to ``.mp4`` or ``.gif``, atomically.

    mp4 uses imageio-ffmpeg (libx264, yuv420p, no resizing; odd sizes are padded by one pixel).
    Returns the path written.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".mp4", ".gif"):
        raise ValueError(f"video path must end in .mp4 or .gif, got {path}")
    arr = _as_video_array(frames)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=f".tmp{suffix}") as tmp:  # imageio picks the format by suffix
        if suffix == ".mp4":
            import imageio.v2 as iio2

            if arr.shape[-1] == 4:
                arr = arr[..., :3]
            pad_h, pad_w = arr.shape[1] % 2, arr.shape[2] % 2
            if pad_h or pad_w:
                arr = np.pad(arr, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
            with iio2.get_writer(tmp, format="FFMPEG", mode="I", fps=fps, codec="libx264",
                                 macro_block_size=1, pixelformat="yuv420p", ffmpeg_log_level="error") as writer:
                for frame in arr:
                    writer.append_data(frame)
        else:
            import imageio.v3 as iio3

            iio3.imwrite(tmp, arr, extension=".gif", duration=1000.0 / fps, loop=0)
    return path


# --------------------------------------------------------------------------------------------
# curves


def _eval_csv(p: str | os.PathLike) -> Path:
    p = Path(p)
    if p.is_dir():
        p = p / "eval.csv"
    if not p.is_file():
        raise FileNotFoundError(f"no eval CSV at {p}")
    return p


def _default_label(csv_path: Path) -> str:
    return csv_path.parent.name if csv_path.name == "eval.csv" else csv_path.stem


def _load_xy(csv_path: Path, x: str, y: str) -> tuple[np.ndarray, np.ndarray]:
    fields, rows = read_csv(csv_path)
    if not fields:
        raise ValueError(f"{csv_path} is empty: the run has logged no evaluation yet")
    for col in (x, y):
        if col not in fields:
            raise ValueError(f"{csv_path} has no column {col!r} (columns: {fields})")
    xs, ys = [], []
    for r in rows:
        try:
            xv, yv = float(r[x]), float(r[y])
        except (TypeError, ValueError):
            continue  # blank cell
        if math.isfinite(xv) and math.isfinite(yv):
            xs.append(xv)
            ys.append(yv)
    order = np.argsort(xs, kind="stable")
    return np.asarray(xs)[order], np.asarray(ys)[order]


def plot_curves(
    run_dirs_or_csvs,
    out_png: str | os.PathLike,
    *,
    x: str = "frames",
    y: str = "episode_return",
    labels: Sequence[str] | None = None,
    reference: Mapping[str, float] | None = None,
    title: str | None = None,
) -> Path:
    """Plot ``y`` against ``x`` from eval CSVs (run directories or CSV paths) into a PNG.

    Runs sharing a label are one line: the mean with a min-max band, over the x values all of
    them cover (interpolated when their x values differ). The default label is the run
    directory's name. ``reference`` draws labelled horizontal lines (e.g. random-policy return).
    Uses matplotlib's Agg canvas without touching pyplot's global state. Returns the PNG path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if isinstance(run_dirs_or_csvs, (str, os.PathLike)):
        run_dirs_or_csvs = [run_dirs_or_csvs]
    csvs = [_eval_csv(p) for p in run_dirs_or_csvs]
    if not csvs:
        raise ValueError("plot_curves needs at least one run directory or CSV")
    if labels is None:
        labels = [_default_label(c) for c in csvs]
    elif len(labels) != len(csvs):
        raise ValueError(f"got {len(labels)} labels for {len(csvs)} runs")

    groups: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for c, label in zip(csvs, labels):
        xs, ys = _load_xy(c, x, y)
        if len(xs):
            groups.setdefault(str(label), []).append((xs, ys))

    fig = Figure(figsize=(6.4, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for label, runs in groups.items():
        if len(runs) == 1:
            grid, stack = runs[0][0], runs[0][1][None]
        elif all(len(r[0]) == len(runs[0][0]) and np.array_equal(r[0], runs[0][0]) for r in runs):
            grid, stack = runs[0][0], np.stack([r[1] for r in runs])
        else:
            lo = max(r[0][0] for r in runs)
            hi = min(r[0][-1] for r in runs)
            grid = np.unique(np.concatenate([r[0] for r in runs]))
            grid = grid[(grid >= lo) & (grid <= hi)]
            if len(grid) == 0:  # a mean would be made up from flat extrapolations
                spans = ", ".join(f"{r[0][0]:g}..{r[0][-1]:g}" for r in runs)
                raise ValueError(f"the runs labelled {label!r} share no {x} range ({spans}): give them "
                                 "their own labels")
            stack = np.stack([np.interp(grid, r[0], r[1]) for r in runs])
        mean = stack.mean(axis=0)
        n = len(runs)
        marker = "o" if len(grid) == 1 else None  # a line of one point draws nothing
        (line,) = ax.plot(grid, mean, marker=marker, label=label if n == 1 else f"{label} (n={n})")
        if n > 1:
            ax.fill_between(grid, stack.min(axis=0), stack.max(axis=0), color=line.get_color(),
                            alpha=0.2, linewidth=0)
    for i, (name, value) in enumerate((reference or {}).items()):
        ax.axhline(float(value), linestyle="--", linewidth=1, color=f"C{(i + 7) % 10}",
                   label=str(name))
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    if title:  # wrapped: a long title would run off the figure
        ax.set_title(textwrap.fill(title, 60))
    ax.grid(alpha=0.3)
    if groups or reference:
        ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    out = Path(out_png)
    atomic_write_bytes(out, buf.getvalue())
    return out


# --------------------------------------------------------------------------------------------
# config files


def _plain(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    return v


def _config_path(run_dir: str | os.PathLike) -> Path:
    p = Path(run_dir)
    return p if p.suffix in (".yaml", ".yml") else p / "config.yaml"


def write_config(run_dir: str | os.PathLike, config: Mapping[str, Any]) -> Path:
    """Write ``config`` (a plain dict; tuples become lists, paths strings) to config.yaml."""
    import yaml

    path = _config_path(run_dir)
    text = yaml.safe_dump(_plain(config), sort_keys=False, default_flow_style=False)
    atomic_write_bytes(path, text.encode())
    return path


def load_yaml(text: str) -> Any:
    """yaml.safe_load, except that a mapping holding a key twice is a yaml.YAMLError (PyYAML keeps
    the last value silently: a spec with two `seeds:` lines would run the second)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may be overridden
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    repeated = key in seen
                    seen.add(key)
                except TypeError:  # an unhashable key: SafeLoader's own error follows
                    continue
                if repeated:
                    raise yaml.constructor.ConstructorError("while constructing a mapping", node.start_mark,
                                                            f"found the key {key!r} twice", key_node.start_mark)
            return super().construct_mapping(node, deep)

    return yaml.load(text, Loader=UniqueKeyLoader)


def read_config(run_dir: str | os.PathLike) -> dict:
    """Read ``run_dir/config.yaml`` (or a .yaml path). Missing: FileNotFoundError; not valid
    YAML or not a mapping: ValueError. Both name the file."""
    import yaml

    path = _config_path(run_dir)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"config file {path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except yaml.YAMLError as e:
        raise ValueError(f"config file {path} is not valid YAML: {e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(
            f"config file {path} must hold a mapping of field: value, got {type(data).__name__}"
        )
    return data
