import csv
import io
import time

import numpy as np
import pytest

from crl.logger import Logger, Progress, plot_curves, read_config, save_video, write_config


def _rows(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def _counters(frames):
    return {"frames": frames, "agent_steps": frames // 2, "updates": frames // 4}


def _scalars(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    return {
        tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]
    }


def test_csv_columns_values_and_flush(tmp_path):
    log = Logger(tmp_path, tensorboard=False)
    log.log("train", _counters(100), {"loss": 0.5, "alpha": np.float32(0.25)})
    # flushed after each row: readable while the logger is still open
    fields, rows = _rows(tmp_path / "train.csv")
    assert fields == ["frames", "agent_steps", "updates", "wall_time", "loss", "alpha"]
    assert rows[0]["frames"] == "100" and rows[0]["agent_steps"] == "50"
    assert rows[0]["updates"] == "25"
    assert float(rows[0]["loss"]) == 0.5 and float(rows[0]["alpha"]) == 0.25
    assert float(rows[0]["wall_time"]) >= 0
    log.log("eval", _counters(100), {"episode_return": 12.5})
    log.close()
    fields, rows = _rows(tmp_path / "eval.csv")
    assert fields[-1] == "episode_return" and rows[0]["episode_return"] == "12.5"
    with pytest.raises(ValueError, match="counters"):
        Logger(tmp_path, tensorboard=False).log("train", {"frames": 1}, {})
    with pytest.raises(ValueError, match="kind"):
        Logger(tmp_path, tensorboard=False).log("test", _counters(1), {})


def test_new_metric_rewrites_with_union_of_columns(tmp_path):
    with Logger(tmp_path, tensorboard=False) as log:
        log.log("train", _counters(10), {"loss": 1.0})
        log.log("train", _counters(20), {"loss": 2.0, "q": 3.0})
        log.log("train", _counters(30), {"q": 4.0})
        log.log("train", _counters(40), {"loss": None, "q": 5.0})
    fields, rows = _rows(tmp_path / "train.csv")
    assert fields == ["frames", "agent_steps", "updates", "wall_time", "loss", "q"]
    assert [r["frames"] for r in rows] == ["10", "20", "30", "40"]
    assert [r["loss"] for r in rows] == ["1.0", "2.0", "", ""]
    assert [r["q"] for r in rows] == ["", "3.0", "4.0", "5.0"]
    assert not list(tmp_path.glob(".*tmp"))


def test_resume_drops_later_rows_and_continues_wall_time(tmp_path):
    with Logger(tmp_path, tensorboard=False) as log:
        for frames in (100, 200, 300):
            log.log("eval", _counters(frames), {"episode_return": float(frames)})
        log.log("train", _counters(150), {"loss": 1.0})
        log.log("train", _counters(250), {"loss": 2.0})
    # pretend the first session ran for an hour
    fields, rows = _rows(tmp_path / "eval.csv")
    for r in rows:
        r["wall_time"] = str(3600.0 + float(r["frames"]))
    with open(tmp_path / "eval.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)

    with Logger(tmp_path, tensorboard=False, resume_frames=200) as log:
        log.log("eval", _counters(300), {"episode_return": -1.0})
    _, rows = _rows(tmp_path / "eval.csv")
    assert [(r["frames"], r["episode_return"]) for r in rows] == [
        ("100", "100.0"),
        ("200", "200.0"),
        ("300", "-1.0"),
    ]
    assert float(rows[-1]["wall_time"]) >= 3800.0  # continues from the kept rows
    _, rows = _rows(tmp_path / "train.csv")
    assert [r["frames"] for r in rows] == ["150"]

    # a fresh (non-resume) logger starts new files
    with Logger(tmp_path, tensorboard=False) as log:
        log.log("eval", _counters(5), {"episode_return": 0.0})
    assert [r["frames"] for r in _rows(tmp_path / "eval.csv")[1]] == ["5"]
    assert not (tmp_path / "train.csv").exists()


HEADER = "frames,agent_steps,updates,wall_time,episode_return\r\n"


def test_resume_drops_a_cut_short_last_line_and_rows_of_the_wrong_width(tmp_path):
    path = tmp_path / "eval.csv"
    path.write_text(HEADER + "200,100,50,1.0,12.5\r\n" + "300,150,75,1.5,7.0,99\r\n" + "400,50,1,1.372,299.47",
                    newline="")
    with Logger(tmp_path, tensorboard=False, resume_frames=400) as log:
        log.log("eval", _counters(800), {"episode_return": 3.0})
    fields, rows = _rows(path)
    assert fields == HEADER.strip().split(",")
    assert [(r["frames"], r["episode_return"]) for r in rows] == [("200", "12.5"), ("800", "3.0")]
    assert all(None not in r and None not in r.values() for r in rows)
    with Logger(tmp_path, tensorboard=False, resume_frames=800) as log:  # and again: the run goes on
        log.log("eval", _counters(1200), {"episode_return": 4.0})
    assert [r["frames"] for r in _rows(path)[1]] == ["200", "800", "1200"]


def test_resume_drops_a_cut_short_header(tmp_path):
    (tmp_path / "eval.csv").write_text("frames,agent_st", newline="")
    with Logger(tmp_path, tensorboard=False, resume_frames=0) as log:
        log.log("eval", _counters(100), {"episode_return": 1.0})
    fields, rows = _rows(tmp_path / "eval.csv")
    assert fields[:2] == ["frames", "agent_steps"] and [r["frames"] for r in rows] == ["100"]


def test_a_csv_that_is_not_utf8_is_named_in_the_error(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes(bytes(range(128, 256)) * 4)
    with pytest.raises(ValueError, match=f"{path} is not a readable CSV file"):
        Logger(tmp_path, tensorboard=False, resume_frames=100)
    with pytest.raises(ValueError, match=f"{path} is not a readable CSV file"):
        plot_curves(path, tmp_path / "curves.png")
    path.write_text("frames,episode_return\n10,1\0\n20,2\n")  # a NUL byte inside: corrupted, not text
    with pytest.raises(ValueError, match=f"{path} is not a readable CSV file: it holds NUL bytes"):
        Logger(tmp_path, tensorboard=False, resume_frames=100)


@pytest.mark.parametrize("tail", ["", "300,agent_st", "300,1"])
def test_resume_keeps_the_rows_before_a_tail_of_nul_bytes(tmp_path, tail):
    """A crash can leave the file's allocated tail as NUL bytes (XFS, ext4 delayed allocation):
    the rows before them are kept, the cut line and the NULs dropped, the file rewritten clean."""
    with Logger(tmp_path, tensorboard=False) as log:
        for frames in (100, 200):
            log.log("eval", _counters(frames), {"episode_return": frames / 100})
    path = tmp_path / "eval.csv"
    clean = path.read_bytes()
    path.write_bytes(clean + tail.encode() + b"\0" * 64)
    with Logger(tmp_path, tensorboard=False, resume_frames=200) as log:
        assert log.last_logged["eval"] == 200
    assert path.read_bytes() == clean


def test_tensorboard_scalars_and_resume_purge(tmp_path):
    with Logger(tmp_path) as log:
        for frames in (100, 200, 300):
            log.log("train", _counters(frames), {"loss": frames / 100})
        log.log("eval", _counters(300), {"episode_return": 7.0})
    s = _scalars(tmp_path)
    assert s["train/loss"] == [(100, 1.0), (200, 2.0), (300, 3.0)]
    assert s["eval/episode_return"] == [(300, 7.0)]

    # TensorBoard orders event files by name: whole seconds, then a per-process counter that
    # sorts as text ("...9" after "...10"). A real resume is another process seconds later; here,
    # one second apart keeps the two files in the order they were written.
    time.sleep(1.05)
    with Logger(tmp_path, resume_frames=200) as log:
        log.log("train", _counters(300), {"loss": 30.0})
    s = _scalars(tmp_path)
    assert s["train/loss"] == [(100, 1.0), (200, 2.0), (300, 30.0)]
    assert s["eval/episode_return"] == []

    # a fresh start in the same directory (an attempt stopped before its first checkpoint, run
    # again) draws only its own curve
    time.sleep(1.05)
    with Logger(tmp_path) as log:
        log.log("train", _counters(100), {"loss": 0.5})
    assert _scalars(tmp_path)["train/loss"] == [(100, 0.5)]


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_save_video(tmp_path, suffix):
    import imageio.v2 as iio2
    import imageio.v3 as iio3

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(6, 3, 84, 84), dtype=np.uint8)  # CHW
    path = save_video(tmp_path / "videos" / f"ep{suffix}", list(frames), fps=10)
    assert path.exists() and path.stat().st_size > 0
    if suffix == ".mp4":
        reader = iio2.get_reader(path, format="FFMPEG")
        assert reader.count_frames() == 6
        assert tuple(reader.get_meta_data()["size"]) == (84, 84)
        reader.close()
    else:
        back = iio3.imread(path, index=None)
        assert back.shape == (6, 84, 84, 3)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp files

    with pytest.raises(TypeError, match="uint8"):
        save_video(tmp_path / f"bad{suffix}", frames.astype(np.float32))
    with pytest.raises(ValueError):
        save_video(tmp_path / "bad.avi", frames)


def test_plot_curves(tmp_path):
    runs = []
    for seed in range(3):
        d = tmp_path / f"sac-{seed}"
        with Logger(d, tensorboard=False) as log:
            for frames in (0, 1000, 2000):
                log.log("eval", _counters(frames), {"episode_return": frames * (seed + 1.0)})
        runs.append(d)
    out = plot_curves(
        runs + [runs[0] / "eval.csv"],
        tmp_path / "plots" / "curve.png",
        labels=["sac", "sac", "sac", "single"],
        reference={"random": 10.0},
        title="cheetah-run",
    )
    data = out.read_bytes()
    assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no column 'success'"):
        plot_curves(runs, tmp_path / "x.png", y="success")
    with pytest.raises(FileNotFoundError, match="eval"):
        plot_curves([tmp_path / "missing"], tmp_path / "x.png")
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(ValueError, match="empty.csv is empty"):
        plot_curves([tmp_path / "empty.csv"], tmp_path / "x.png")
    late = tmp_path / "late"
    with Logger(late, tensorboard=False) as log:
        for frames in (5000, 6000):
            log.log("eval", _counters(frames), {"episode_return": 1.0})
    with pytest.raises(ValueError, match=r"runs labelled 'sac' share no frames range \(0..2000, 5000..6000\)"):
        plot_curves([runs[0], late], tmp_path / "x.png", labels=["sac", "sac"])


def test_config_round_trip_and_errors(tmp_path):
    cfg = {"agent": "sac", "lr": 3e-4, "hidden": (256, 256), "nested": {"a": 1, "b": None},
           "env": "dmc:cheetah-run", "zeta": True}
    path = write_config(tmp_path, cfg)
    assert path == tmp_path / "config.yaml"
    assert list(path.read_text().splitlines())[0] == "agent: sac"  # insertion order kept
    back = read_config(tmp_path)
    assert back == dict(cfg, hidden=[256, 256])
    assert list(back) == list(cfg)

    with pytest.raises(FileNotFoundError, match="config.yaml"):
        read_config(tmp_path / "elsewhere")
    (tmp_path / "config.yaml").write_text("a: [1, 2\n")
    with pytest.raises(ValueError, match="config.yaml"):
        read_config(tmp_path)
    (tmp_path / "config.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="mapping"):
        read_config(tmp_path)
    (tmp_path / "config.yaml").write_bytes(b"agent: \xff\n")
    with pytest.raises(ValueError, match=r"config.yaml is not UTF-8 text \(invalid start byte at byte 7\)"):
        read_config(tmp_path)


def test_progress_counts_frames_and_keeps_postfix():
    buf = io.StringIO()
    p = Progress(total=1000, initial=50, file=buf, non_tty_interval=0)
    assert p.n == 50
    p.update(100, updates=5, eval=None)
    p.update(400, eval_return=12.3456)
    assert p.n == 400
    p.update(400)
    assert p.n == 400
    p.close()
    out = buf.getvalue()
    assert "400/1" in out or "400/1.00k" in out
    assert "eval_return=12.35" in out and "updates=5" in out
    assert "eval=" not in out


def test_plot_curves_leaves_out_a_last_line_cut_short_by_a_crash(tmp_path):
    early, late = tmp_path / "early", tmp_path / "late"
    for run, frames in ((early, (0, 1000, 2000)), (late, (2500, 3500))):
        with Logger(run, tensorboard=False) as log:
            for f in frames:
                log.log("eval", _counters(f), {"episode_return": 1.0})
    fields = (early / "eval.csv").read_text().splitlines()[0].split(",")
    with open(early / "eval.csv", "a") as f:  # every cell there, the last number cut short, no newline
        f.write(",".join("3000" if name == "frames" else "1" for name in fields))
    # without the cut row `early` ends at 2000 frames, before `late` starts: nothing to average
    with pytest.raises(ValueError, match=r"share no frames range \(0..2000, 2500..3500\)"):
        plot_curves([early, late], tmp_path / "x.png", labels=["run", "run"])
