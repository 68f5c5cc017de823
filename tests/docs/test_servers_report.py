"""scripts/test's last block (tests/helpers/servers.py): the real servers a run used or skipped.

The plugin runs in a pytest of its own over a few stand-in test modules,
placed where the server tests are (``tests/engines/test_sge.py``, ...), that
skip, fail or pass as the real ones do with and without their servers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SERVER_FIXTURE = """
import os
import pytest

@pytest.fixture
def {fixture}():
    problem = {problem!r}
    if problem:
        if os.environ.get("{require}") == "1":
            pytest.fail(f"{require}=1, but {{problem}}")
        pytest.skip(problem)

def test_one({fixture}):
    pass

def test_two({fixture}):
    pass

def test_without_the_server():
    pass
"""


def _write(folder: Path, module: str, fixture: str, problem: str, require: str) -> None:
    path = folder / module
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(SERVER_FIXTURE.format(fixture=fixture, problem=problem, require=require))


def _run(folder: Path, **env: str) -> subprocess.CompletedProcess[str]:
    (folder / "pytest.ini").write_text("[pytest]\n")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PYCREW_")}
    environment["PYTHONPATH"] = os.pathsep.join((str(ROOT / "src"), str(ROOT)))
    environment["PYTHONDONTWRITEBYTECODE"] = "1"
    environment.update(env)
    command = [sys.executable, "-m", "pytest", "-p", "tests.helpers.servers"]
    command += ["-p", "no:cacheprovider", "-c", str(folder / "pytest.ini"), "tests"]
    return subprocess.run(
        command,
        cwd=folder,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _block(out: str) -> list[str]:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if "real servers" in line)
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("=="))
    return [line.rstrip() for line in lines[start + 1 : end]]


def test_the_block_names_used_skipped_and_missing_servers(tmp_path: Path) -> None:
    missing = "Grid Engine's commands are not installed (run scripts/sge-cluster up as root)"
    _write(tmp_path, "tests/engines/test_sge.py", "sge", missing, "PYCREW_REQUIRE_SGE")
    _write(tmp_path, "tests/engines/test_ssh.py", "remote", "", "PYCREW_REQUIRE_NETNS")
    done = _run(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    block = _block(done.stdout)
    rows = {line[:22].strip(): line[22:] for line in block if line.startswith("  ")}
    assert rows == {
        "SLURM": "not used: none of its tests in this run",
        "Grid Engine": f"skipped 2 tests: {missing}",
        "PBS commands": "not used: none of its tests in this run",
        "sshd (netns)": "used: 2 tests",
        "Chromium (headless)": "not used: none of its tests in this run",
        "network namespaces": "not used: none of its tests in this run",
    }
    how = " ".join(line for line in block if not line.startswith("  "))
    assert ".ci/run" in how
    assert "scripts/sge-cluster up" in how

    # where CI requires the server, its absence fails the run, and the block says so
    required = _run(tmp_path, PYCREW_REQUIRE_SGE="1")
    assert required.returncode == 1
    (sge,) = [line for line in _block(required.stdout) if "Grid Engine" in line]
    assert sge.endswith(f"MISSING (PYCREW_REQUIRE_SGE=1): 2 tests failed: {missing}")
