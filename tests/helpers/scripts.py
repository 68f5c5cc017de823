"""Running Python code as a user would: a fresh interpreter with this checkout's pycrew."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

#: how long a script's controller and processes get to end
WAIT = 30

ROOT = Path(__file__).resolve().parents[2]


def run_python(
    code: str,
    *,
    script: Path | None = None,
    cwd: Path | None = None,
    stdin: str | None = None,
    seconds: float = 180,
    unset: Callable[[str], bool] | None = None,
    **env: str,
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` (as the file ``script`` if given, so tracebacks and pdb show its lines).

    The interpreter finds this checkout's pycrew and the tests' task modules
    first; it inherits this process's environment less the variables
    ``unset`` picks, plus ``env``.
    """
    environment = {k: v for k, v in os.environ.items() if unset is None or not unset(k)}
    environment.update(env)
    environment["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH")) if p
    )
    if script is not None:
        script.write_text(code)
        command = [sys.executable, str(script)]
        cwd = cwd or script.parent
    else:
        command = [sys.executable, "-c", code]
    return subprocess.run(
        command,
        cwd=cwd or ROOT,
        input=stdin,
        env=environment,
        capture_output=True,
        text=True,
        timeout=seconds,
        check=False,
    )


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@contextlib.contextmanager
def controller_script(
    path: Path, source: str, *args: str
) -> Iterator[tuple[subprocess.Popen[str], list[int]]]:
    """Run ``source`` as a controller's script; yield it and the pids on its first line.

    Whatever the test does, the script and those processes end afterwards.
    """
    path.write_text(source)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    controller = subprocess.Popen(
        [sys.executable, str(path), *args], stdout=subprocess.PIPE, text=True, env=env
    )
    pids: list[int] = []
    try:
        assert controller.stdout is not None
        pids = [int(pid) for pid in controller.stdout.readline().split()]
        yield controller, pids
    finally:
        controller.kill()
        controller.wait(WAIT)
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
