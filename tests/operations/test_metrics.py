"""Per-task resources in every record, workers' metrics samples, reading and plotting them.

Real workers throughout; every wait is bounded. Task bodies are code strings,
so that workers import nothing of this module (and pytest with it).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest

import pycrew
import pycrew.metrics
from pycrew._operations import _metrics
from pycrew._worker._evaluate import Meter
from tests.helpers.common import wait_until

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "metrics.md"
MIB = 2**20
SIZE = 200 * MIB
#: hold ``size`` bytes for ``hold`` seconds; bytearray(n) writes its zeros,
#: and the slice touches every page again, so all of it is resident
ALLOCATE = """
import time
block = bytearray(size)
block[::4096] = b"\\x01" * len(range(0, size, 4096))
time.sleep(hold)
del block
"""
# busy for this much CPU time, however long a loaded machine takes to give it
BUSY = """
import time
end = time.process_time() + seconds
while time.process_time() < end:
    pass
"""
WAIT = 60  # the longest any single task may take here


def _wait_for_exit_sample(path: Path) -> None:
    """Wait for a worker that leaves on its own (seconds_idle) to write its last sample.

    Not terminate(): its workers may be killed before they write it (see the
    report on the controller's shutdown order).
    """
    wait_until(
        lambda: any(r["phase"] == "exit" for r in pycrew.metrics.read(path)),
        20,
        "the worker's last sample",
    )


def _resettable() -> bool:
    """Whether this kernel lets a process reset its resident high-water mark."""
    return Meter().clear_fd >= 0


def _png_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(width, height) of a PNG, read back with matplotlib."""
    image = matplotlib.image.imread(os.fspath(path))
    return image.shape[1], image.shape[0]


def _sample(t: float, pid: int = 1, **fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "time": t,
        "pid": pid,
        "worker": f"w-{pid}",
        "controller": "c",
        "phase": "idle",
        "task": None,
        "cpu": 1.0,
        "resident": 10 * MIB,
        "virtual": 20 * MIB,
    }
    return base | fields


def _line(record: dict[str, object]) -> str:
    return f"{_metrics.MARKER} {json.dumps(record)}\n"


# per-task resources ----------------------------------------------------------


def test_records_carry_peak_memory_and_cpu_seconds() -> None:
    with pycrew.local_controller(workers=1, seconds_interval=0.05) as ctl:
        baseline = ctl.push("None", name="baseline").record(WAIT)
        big = ctl.push(ALLOCATE, data={"size": SIZE, "hold": 0}, name="allocate").record(WAIT)
        quick = ctl.push("None", name="quick").record(WAIT)
        busy = ctl.push(BUSY, data={"seconds": 0.3}, name="busy").record(WAIT)
        idle = ctl.push("import time\ntime.sleep(0.3)", name="sleep").record(WAIT)
        failed = ctl.push("raise ValueError('no')", name="fail").record(WAIT)
    records = [baseline, big, quick, busy, idle, failed]
    assert [r.status for r in records] == ["success"] * 5 + ["error"]
    assert len({r.pid for r in records}) == 1, "one worker ran them all"
    for record in records:  # an error is measured too
        assert isinstance(record.memory_peak, int)
        assert record.memory_peak > 0
        assert isinstance(record.cpu_seconds, float)
        assert record.cpu_seconds >= 0
    assert busy.cpu_seconds is not None
    assert busy.cpu_seconds >= 0.2
    assert idle.cpu_seconds is not None
    assert idle.cpu_seconds < 0.1, "sleeping is not CPU time"
    if not _resettable():
        pytest.skip("no resettable high-water mark here: memory_peak is the peak so far")
    assert big.memory_peak is not None
    assert baseline.memory_peak is not None
    grown = big.memory_peak - baseline.memory_peak
    assert abs(grown - SIZE) < 0.1 * SIZE, f"the task added {grown / MIB:.0f} MiB, not 200"
    # the mark was reset: the tasks after the big one do not inherit its peak
    for after in (quick, busy):
        assert after.memory_peak is not None
        assert after.memory_peak < baseline.memory_peak + 0.1 * SIZE


def test_a_quick_task_reports_its_resident_size_within_a_megabyte_or_two_of_the_mark() -> None:
    """Under QUICK_CPU of CPU, the peak is read from the resident size (cheaper): it
    stays close to what the high-water mark says."""
    meter = Meter()
    if meter.clear_fd < 0 or meter.statm_fd < 0:
        pytest.skip("no resettable high-water mark or no /proc/self/statm here")
    started = meter.start()
    resident = meter._resident()
    peak, _ = meter.stop(started)  # quick, unless other threads here ran meanwhile
    mark = meter._status_peak()
    assert resident is not None
    assert mark is not None
    assert peak is not None
    assert abs(resident - mark) < 2 * MIB
    assert abs(peak - mark) < 2 * MIB


def test_a_task_cancelled_before_it_starts_has_no_measurements() -> None:
    with pycrew.local_controller(workers=1, seconds_interval=0.05) as ctl:
        first = ctl.push("import time\ntime.sleep(1.0)", name="first")
        second = ctl.push("None", name="second")
        ctl.cancel(names=["second"])
        record = second.record(WAIT)
        assert first.record(WAIT).status == "success"
    assert record.status == "cancel"
    assert record.memory_peak is None
    assert record.cpu_seconds is None


def test_workers_load_nothing_for_metrics_while_they_are_off() -> None:
    """psutil and the metrics module cost start-up time: only workers that sample load them."""
    probe = (
        "import sys\n"
        "sorted(m for m in ('psutil', 'pycrew._operations._metrics') if m in sys.modules)"
    )
    with pycrew.local_controller(workers=1) as ctl:
        assert ctl.push(probe).record(WAIT).result == []


# metrics samples -------------------------------------------------------------


def test_metrics_files_show_a_task_allocating_memory_and_plot_it(tmp_path: Path) -> None:
    folder = tmp_path / "metrics"  # made by the worker
    metrics = pycrew.Metrics(folder, seconds_interval=0.2)
    with pycrew.local_controller(workers=1, metrics=metrics, seconds_idle=0.3) as ctl:
        future = ctl.push(ALLOCATE, data={"size": SIZE, "hold": 2.0}, name="allocate")
        record = future.record(WAIT)
        _wait_for_exit_sample(folder)
    assert record.status == "success"
    assert [p.name for p in folder.iterdir()] == [f"{record.worker}.metrics"]
    records = pycrew.metrics.read(folder)
    assert {r["pid"] for r in records} == {record.pid}
    assert set(records[0]) == {
        "time",
        "pid",
        "worker",
        "controller",
        "phase",
        "task",
        "cpu",
        "resident",
        "virtual",
        "elapsed",
    }
    assert records[0]["controller"] == ctl.name
    assert records[0]["worker"] == record.worker
    # one sample as the worker starts, one as it ends, and the task in between
    assert records[0]["phase"] == "start"
    assert records[-1]["phase"] == "exit"
    assert records[0]["elapsed"] == 0
    assert all(a["elapsed"] <= b["elapsed"] for a, b in itertools.pairwise(records))
    resident = [r["resident"] for r in records]
    assert max(resident) - min(resident) > 150 * MIB
    during = [r for r in records if r["task"] is not None]
    assert len(during) >= 3, "a 2 s task sampled every 0.2 s"
    # the phase is the task's name where the controller sends it along, else "task"
    assert {r["phase"] for r in during} <= {"allocate", "task"}
    assert max(records, key=lambda r: r["resident"])["task"] is not None
    assert {r["phase"] for r in records if r["task"] is None} <= {"start", "idle", "exit"}

    # the task is one shaded span covering its samples
    xs = [r["time"] - records[0]["time"] for r in records]
    spans = _metrics._task_spans(records, xs)
    assert len(spans) == 1
    first, last, start, end, _ = spans[0]
    assert records[first]["task"] == records[last]["task"] is not None
    assert end - start >= 1.0

    png = pycrew.metrics.plot(records, "resident", tmp_path / "memory.png")
    assert png == str(tmp_path / "memory.png")
    assert _png_size(png) == (800, 400)
    cpu = pycrew.metrics.plot(folder, "cpu", tmp_path / "cpu.png", size=(640, 320))
    assert _png_size(cpu) == (640, 320)

    frame = pycrew.metrics.to_pandas(records)
    assert len(frame) == len(records)
    assert {"datetime", "resident", "phase"} <= set(frame.columns)


@pytest.mark.parametrize(("stream", "join"), [("/dev/stdout", True), ("/dev/stderr", False)])
def test_metrics_mixed_into_worker_logs_are_read_back(
    tmp_path: Path, stream: str, join: bool
) -> None:
    logs = tmp_path / "logs"
    # half a line of task output, then samples land in the middle of it
    task = (
        "import sys, time\n"
        "print('task output without an end', end='', flush=True)\n"
        "print('task error text', file=sys.stderr, flush=True)\n"
        "time.sleep(0.5)\n"
        "print(' ... and its end', flush=True)\n"
    )
    with pycrew.local_controller(
        workers=1,
        metrics=pycrew.Metrics(stream, seconds_interval=0.1),
        log_directory=logs,
        log_join=join,
        seconds_idle=0.3,
    ) as ctl:
        record = ctl.push(task, name="chatty").record(WAIT)
        _wait_for_exit_sample(logs)
    assert record.status == "success"
    worker = record.worker
    names = sorted(p.name for p in logs.iterdir())
    assert names == (
        [f"{worker}.log"] if join else [f"{worker}-stderr.log", f"{worker}-stdout.log"]
    )
    records = pycrew.metrics.read(logs)
    assert {r["phase"] for r in records} >= {"start", "exit"}
    assert any(r["task"] is not None for r in records)
    assert all(r["pid"] == record.pid for r in records)
    if not join:  # the stream asked for, and that one only
        assert pycrew.metrics.read(logs / f"{worker}-stdout.log") == []
        assert len(pycrew.metrics.read(logs / f"{worker}-stderr.log")) == len(records)
    text = "".join(p.read_text() for p in logs.iterdir())
    assert "task output without an end" in text
    assert "task error text" in text
    assert "... and its end" in text
    # the header line, once
    header = re.findall(
        r"pycrew worker (\S+): connected to \S+: controller (\S+), pid (\d+), "
        r"host (\S+), Python (\S+), pycrew (\S+)",
        text,
    )
    assert len(header) == 1
    assert header[0][:3] == (worker, ctl.name, str(record.pid))
    assert header[0][4] == ".".join(map(str, sys.version_info[:3]))


def test_an_unwritable_metrics_path_leaves_tasks_running_and_says_why(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    logs = tmp_path / "logs"
    metrics = pycrew.Metrics(blocker / "metrics", seconds_interval=0.1)
    with pycrew.local_controller(workers=1, metrics=metrics, log_directory=logs) as ctl:
        records = ctl.map("x * 2", iterate={"x": [1, 2, 3]})
    assert [r.result for r in records] == [2, 4, 6]
    log = (logs / f"{records[0].worker}.log").read_text()
    lines = [line for line in log.splitlines() if "metrics are off" in line]
    assert len(lines) == 1, log
    assert str(blocker / "metrics") in lines[0]
    assert "Error" in lines[0]  # the reason: NotADirectoryError or FileExistsError
    assert _metrics.MARKER not in log


# reading and plotting --------------------------------------------------------


def test_read_picks_marked_lines_out_of_anything(tmp_path: Path) -> None:
    (tmp_path / "deep" / "er").mkdir(parents=True)
    mixed = tmp_path / "deep" / "er" / "worker.log"
    mixed.write_text(
        "pycrew worker w-1: connected to 127.0.0.1:1: controller c\n"
        + _line(_sample(100.5, pid=1))
        + "half a line of output"
        + _line(_sample(101.0, pid=1, phase="fit", task=3))
        + f"{_metrics.MARKER} {{not json\n"
        + f"{_metrics.MARKER} [1, 2]\n"
        + f"{_metrics.MARKER} {json.dumps({'pid': 1})}\n"  # no time
        + _line(_sample(102.0, pid=1)).rstrip("\n")
        + " trailing words\n"
        + "\x00\xff binary-ish \n"
    )
    (tmp_path / "other.metrics").write_text(_line(_sample(100.0, pid=2)) + _line(_sample(103, 2)))
    (tmp_path / "picture.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    records = pycrew.metrics.read(tmp_path)
    assert [(r["pid"], r["time"], r["elapsed"]) for r in records] == [
        (2, 100.0, 0.0),
        (1, 100.5, 0.0),
        (1, 101.0, 0.5),
        (1, 102.0, 1.5),
        (2, 103, 3.0),
    ]
    assert records[2]["phase"] == "fit"
    assert pycrew.metrics.read(mixed) == [r for r in records if r["pid"] == 1]
    assert pycrew.metrics.read(tmp_path / "picture.png") == []
    with pytest.raises(FileNotFoundError):
        pycrew.metrics.read(tmp_path / "missing")


def test_plot_refuses_what_it_cannot_draw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    records = [_sample(1.0), _sample(2.0)]
    with pytest.raises(ValueError, match="metric must be one of"):
        pycrew.metrics.plot(records, "swap", tmp_path / "x.png")
    with pytest.raises(ValueError, match="no samples"):
        pycrew.metrics.plot([], "resident", tmp_path / "x.png")
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        pycrew.metrics.plot(records, "resident", tmp_path / "x.png")
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match="pip install pandas"):
        pycrew.metrics.to_pandas(records)
    assert not (tmp_path / "x.png").exists()


def test_cli_plots_a_folder(tmp_path: Path) -> None:
    folder = tmp_path / "metrics"
    folder.mkdir()
    lines = [
        _sample(
            10.0 + i / 10, pid=pid, resident=(20 + pid * i) * MIB, task=1 if 3 < i < 8 else None
        )
        for pid in (1, 2)
        for i in range(12)
    ]
    (folder / "w.metrics").write_text("".join(map(_line, lines)))
    output = tmp_path / "x.png"
    command = [sys.executable, "-m", "pycrew", "metrics", "plot", str(folder)]
    done = subprocess.run(
        [*command, "--output", str(output)], capture_output=True, text=True, timeout=WAIT
    )
    assert done.returncode == 0, done.stderr
    assert "24 samples of 2 worker(s)" in done.stdout
    assert _png_size(output) == (800, 400)
    done = subprocess.run(
        [*command, "--metric", "cpu"], capture_output=True, text=True, timeout=WAIT, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert _png_size(tmp_path / "cpu.png") == (800, 400)
    (tmp_path / "empty").mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "pycrew", "metrics", "plot", str(tmp_path / "empty")],
        capture_output=True,
        text=True,
        timeout=WAIT,
        cwd=tmp_path,
    )
    assert done.returncode == 1
    assert "pycrew metrics: no samples" in done.stderr


def test_the_metrics_module_is_reachable_from_the_package() -> None:
    code = "import pycrew; print(pycrew.metrics.read.__module__, pycrew.Metrics.__name__)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=WAIT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["pycrew._operations._metrics", "Metrics"]
    assert pycrew.metrics.Metrics is pycrew.Metrics


# the guide -------------------------------------------------------------------


def test_the_guide_example_runs_and_draws_its_picture(tmp_path: Path) -> None:
    """docs/metrics.md: its python blocks, then its sh blocks, run in an empty folder."""
    text = DOC.read_text()
    blocks = re.findall(r"^```python\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)
    shell = re.findall(r"^```sh\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)
    assert blocks, "the guide has a python example"
    assert shell, "the guide shows the command line"
    script = tmp_path / "example.py"
    script.write_text("\n".join(blocks))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYCREW_")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert done.returncode == 0, done.stderr
    assert "peak" in done.stdout
    picture = tmp_path / "metrics-example.png"
    assert _png_size(picture) == (800, 400)
    for block in shell:
        done = subprocess.run(
            ["bash", "-ec", block],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=WAIT,
        )
        assert done.returncode == 0, done.stderr
    assert _png_size(tmp_path / "memory.png") == (800, 400)
    # the picture the guide shows is the one this example draws
    assert "![" in text
    assert "(metrics-example.png)" in text
    assert _png_size(ROOT / "docs" / "metrics-example.png") == (800, 400)
