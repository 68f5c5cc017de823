"""Workers import what the controller imports: its script's folder, its working
directory, its PYTHONPATH, and modules registered to travel by value."""

from __future__ import annotations

import sys
import textwrap
from typing import TYPE_CHECKING

import pytest

import pycrew
from tests.helpers import tasks
from tests.helpers.scripts import run_python

if TYPE_CHECKING:
    from pathlib import Path

WAIT = 60
HELPERS = """
def double(x):
    return 2 * x
"""

RUN = """
import helpers
import pycrew

with pycrew.{factory} as ctl:
    print("result", ctl.push(helpers.double, 21).result(timeout=120))
"""


def script_in_a_project(tmp_path: Path, factory: str) -> tuple[Path, Path]:
    """``proj/run.py`` calling ``proj/helpers.py``, and a folder to run it from."""
    project = tmp_path / "proj"
    project.mkdir()
    (project / "helpers.py").write_text(HELPERS)
    (project / "run.py").write_text(RUN.format(factory=factory))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    return project / "run.py", elsewhere


def test_a_script_run_from_another_folder_finds_its_helpers(tmp_path: Path) -> None:
    script, elsewhere = script_in_a_project(tmp_path, "local_controller(workers=1)")
    done = run_python(script.read_text(), script=script, cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    assert "result 42" in done.stdout


def test_a_module_registered_by_value_travels_with_the_task(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import shutil, sys
        import cloudpickle
        import pycrew

        sys.path.insert(0, {str(tmp_path / "gone")!r})
        import vanishing
        cloudpickle.register_pickle_by_value(vanishing)
        shutil.rmtree({str(tmp_path / "gone")!r})  # no worker can import it now

        with pycrew.local_controller(workers=1) as ctl:
            print("result", ctl.push(vanishing.triple, 5).result(timeout=120))
        """
    )
    (tmp_path / "gone").mkdir()
    (tmp_path / "gone" / "vanishing.py").write_text("def triple(x):\n    return 3 * x\n")
    done = run_python(code, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "result 15" in done.stdout


def test_env_reaches_every_worker_and_pycrews_own_names_are_refused() -> None:
    with pycrew.local_controller(
        workers=1, env={"MY_SETTING": "on", "OMP_NUM_THREADS": "1"}
    ) as ctl:
        assert ctl.push(tasks.env, "MY_SETTING").result(timeout=WAIT) == "on"
        assert ctl.push(tasks.env, "OMP_NUM_THREADS").result(timeout=WAIT) == "1"
    with pytest.raises(pycrew.ArgumentError, match="pycrew's own"):
        pycrew.local_controller(env={"PYCREW_SECRET": "x"})
    with pytest.raises(pycrew.ArgumentTypeError):
        pycrew.local_controller(env={"N": 1})  # type: ignore[dict-item]


def test_local_workers_run_the_python_they_are_given(tmp_path: Path) -> None:
    python = tmp_path / "python-for-workers"
    python.write_text(f'#!/bin/sh\nexport CHOSEN_PYTHON=yes\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    with pycrew.local_controller(workers=1, python=python) as ctl:
        assert ctl.push(tasks.env, "CHOSEN_PYTHON").result(timeout=WAIT) == "yes"
    missing = pycrew.local_controller(workers=1, python=tmp_path / "no-such-python")
    with pytest.raises(pycrew.LaunchError, match="no-such-python"), missing:
        missing.push(tasks.add, 1, 1).result(timeout=WAIT)


def test_a_log_folder_is_made_or_refused_when_the_controller_is_made(tmp_path: Path) -> None:
    from pycrew.launchers import SlurmLauncher

    SlurmLauncher(log_output=str(tmp_path / "logs" / "%A_%a.out"))
    assert (tmp_path / "logs").is_dir()  # the README's example no longer kills every job
    pycrew.local_controller(log_directory=tmp_path / "worker-logs")
    assert (tmp_path / "worker-logs").is_dir()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(pycrew.ArgumentError, match="log_error: cannot make the folder"):
        SlurmLauncher(log_error=str(blocker / "logs" / "%j.err"))
    with pytest.raises(pycrew.ArgumentError, match="log_directory: cannot make"):
        pycrew.local_controller(log_directory=blocker / "logs")


def test_a_transient_error_is_retried_on_the_worker(tmp_path: Path) -> None:
    with pycrew.local_controller(workers=1) as ctl:
        record = ctl.push(tasks.flaky, str(tmp_path / "a"), 2, retries=2, retry_on=OSError).record(
            timeout=WAIT
        )
        assert record.status is pycrew.Status.SUCCESS
        assert record.attempts == 3
        assert record.warnings is None  # asked-for retries are no warning
        # not one of retry_on: the first error stands
        other = ctl.push(
            tasks.flaky, str(tmp_path / "b"), 1, "ValueError", retries=3, retry_on=OSError
        )
        with pytest.raises(ValueError, match="run 1 failed"):
            other.result(timeout=WAIT)
        assert other.record().attempts == 1
        # retries run out: the last error is the record's
        spent = ctl.push(tasks.flaky, str(tmp_path / "c"), 5, retries=2, retry_on=(OSError,))
        with pytest.raises(OSError, match="run 3 failed"):
            spent.result(timeout=WAIT)
        assert spent.record().attempts == 3


def test_retries_default_per_controller_and_reseed_each_attempt(tmp_path: Path) -> None:
    values = []
    for run in range(2):
        with pycrew.local_controller(workers=1, retries=1, retry_on=OSError) as ctl:
            records = ctl.map(
                tasks.flaky,
                iterate={
                    "path": [str(tmp_path / f"{run}-{i}") for i in range(3)],
                    "failures": [1, 0, 1],
                },
                seed=7,
            )
        assert [r.attempts for r in records] == [2, 1, 2]
        values.append([r.result for r in records])
    assert values[0] == values[1]  # the retried attempts drew the same numbers
    with pytest.raises(pycrew.ArgumentTypeError, match="retry_on"):
        pycrew.local_controller(retry_on="OSError")  # type: ignore[arg-type]
    with pytest.raises(pycrew.ArgumentError, match="retries"):
        pycrew.local_controller(retries=-1)
