"""The launcher guide, docs/launchers.md: its plugin launches real workers, also by name.

The guide's ``python`` blocks run in document order, each in a fresh
interpreter, in one empty folder, as in tests/docs/test_guide.py; a ``text`` block
right below one is its expected output. A block whose first line is a
comment naming a file (``# nice_launcher.py``) is also saved under that
name, as the guide tells readers to do. ``text`` and ``toml`` blocks are
shown, not run.

The guide's ``pyproject.toml`` block is saved next to the plugin, in a
folder that also holds another ``.py`` file (a script trying the plugin
out, where setuptools' guessing of modules refuses to build), and setuptools
itself reads it and writes the package's metadata (``egg_info``), entry
points included, into that folder: as it is on ``sys.path`` (the steps run
there), ``importlib.metadata`` finds the plugin as if ``pip install`` had put
it in site-packages, and nothing is installed anywhere. Other tests register
plugins with a hand-written ``<name>-0.1.dist-info`` folder instead.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import pytest

import pycrew
import pycrew.launchers
from pycrew.launchers import Launcher
from tests.docs.test_guide import FENCE, Step, matches, run_step

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "launchers.md"
SHOWN = ("text", "toml")
#: the first line of a block that is a file: ``# name.py``
FILE_LINE = re.compile(r"\A# (?P<name>\w+\.py)\n")
#: marks the processes started by the guide's steps, to find any left behind
RUN_ENV = "LAUNCHER_GUIDE_RUN"
ENTRY_GROUP = '[project.entry-points."pycrew.launchers"]'
INCREMENT = 10  # NiceLauncher's default
#: setuptools as pip runs it to build a package, configured by its pyproject.toml
SETUP = (sys.executable, "-c", "from setuptools import setup; setup()")


def guide_blocks(text: str) -> tuple[list[Step], list[str]]:
    """The guide's python steps in order (with expected output), and its toml blocks."""
    steps: list[Step] = []
    tomls: list[str] = []
    previous: tuple[Step, int] | None = None
    for match in FENCE.finditer(text):
        info = match["info"].strip().split(" ")[0].lower()
        indent = len(match["indent"])
        body = "".join(line[indent:] for line in match["body"].splitlines(keepends=True))
        line = text.count("\n", 0, match.start()) + 1
        assert info in ("python", *SHOWN), f"{GUIDE.name}:{line}: unknown block {info!r}"
        if info in SHOWN:
            if info == "toml":
                tomls.append(body)
            elif previous is not None and not text[previous[1] : match.start()].strip():
                previous[0].expected = body
            previous = None
            continue
        step = Step("python", body, line)
        steps.append(step)
        previous = (step, match.end())
    return steps, tomls


def file_name(step: Step) -> str | None:
    found = FILE_LINE.match(step.code)
    return found["name"] if found else None


def plugin_code() -> str:
    """The guide's plugin module, exactly as the guide shows it."""
    steps, _ = guide_blocks(GUIDE.read_text())
    files = [s for s in steps if file_name(s) == "nice_launcher.py"]
    assert len(files) == 1, "the guide shows nice_launcher.py once"
    return files[0].code


def registration(toml: str) -> tuple[str, dict[str, str]]:
    """The project name and ``pycrew.launchers`` entry points of a pyproject.toml block."""
    name = re.search(r'^name = "([^"]+)"$', toml, re.MULTILINE)
    assert name is not None, "the pyproject.toml block names its project"
    assert ENTRY_GROUP in toml, f"the pyproject.toml block declares {ENTRY_GROUP}"
    section = toml.split(ENTRY_GROUP, 1)[1].split("\n[", 1)[0]
    entries = dict(re.findall(r'^([\w-]+) = "([\w.]+:[\w.]+)"$', section, re.MULTILINE))
    assert entries, "the pyproject.toml block registers a launcher"
    return name[1], entries


def install_metadata(folder: Path, project: str, entries: dict[str, str]) -> None:
    """What ``pip install`` leaves for entry points: a dist-info folder in ``folder``."""
    info = folder / f"{project.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project}\nVersion: 0.1\n")
    lines = [f"{name} = {value}" for name, value in entries.items()]
    (info / "entry_points.txt").write_text("[pycrew.launchers]\n" + "\n".join(lines) + "\n")


def build_metadata(folder: Path, toml: str) -> subprocess.CompletedProcess[str]:
    """Save ``toml`` as ``folder/pyproject.toml`` and let setuptools write the package's metadata.

    ``egg_info`` reads the configuration and finds the modules to install as
    ``pip install`` would (the same checks, the same errors), and writes
    ``<name>.egg-info`` into ``folder``.
    """
    (folder / "pyproject.toml").write_text(toml)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYCREW_")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return subprocess.run(
        [*SETUP, "--quiet", "egg_info", "--egg-base", str(folder)],
        cwd=folder,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def at_niceness(expected: str, own: int) -> str:
    """The guide shows output from a shell at niceness 0; adjust it to ours."""
    if own == 0:
        return expected
    expected = expected.replace("controller niceness: 0", f"controller niceness: {own}")
    return re.sub(r"(?<![\w'])10\b", str(min(own + INCREMENT, 19)), expected)


def step_env(token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYCREW_")}
    env[RUN_ENV] = token
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def tagged_workers(token: str) -> list[int]:
    """Pids of live pycrew workers started by the guide's steps, wherever they were reparented."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "environ", "status"]):
        info = proc.info
        cmd, env = info["cmdline"] or [], info["environ"] or {}
        if (
            env.get(RUN_ENV) == token
            and "pycrew" in cmd
            and "worker" in cmd
            and info["status"] != psutil.STATUS_ZOMBIE
        ):
            found.append(info["pid"])
    return found


def end_strays(token: str, seconds: float = 10.0) -> list[int]:
    """Wait up to ``seconds`` for the guide's workers to exit; kill and return those left."""
    deadline = time.monotonic() + seconds
    while (left := tagged_workers(token)) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in left:
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).kill()
    return left


def test_every_block_of_the_launcher_guide_runs(tmp_path: Path) -> None:
    steps, tomls = guide_blocks(GUIDE.read_text())
    assert len(steps) >= 4
    assert len(tomls) == 1
    # the plugin, as the guide shows it, is registered as the toml block says
    project, entries = registration(tomls[0])
    assert entries == {"nice": "nice_launcher:NiceLauncher"}
    assert importlib.util.find_spec("setuptools") is not None, (
        "the launcher guide's test builds the plugin's metadata with setuptools: install it"
    )
    token = secrets.token_hex(8)
    env = step_env(token)
    own = os.nice(0)
    try:
        for step in steps:
            name = file_name(step)
            if name is not None:
                (tmp_path / name).write_text(step.code)
            if "controller(NiceLauncher()" in step.code:
                # the reader's script beside the plugin: another .py file in the folder
                (tmp_path / "try_nice.py").write_text(step.code)
            if 'controller("nice"' in step.code:
                # section 5: the package is installed before this step uses it by name
                built = build_metadata(tmp_path, tomls[0])
                assert built.returncode == 0, (
                    f"setuptools refused the guide's pyproject.toml\n{built.stderr}"
                )
                assert [p.name for p in tmp_path.glob("*.egg-info")] == [
                    f"{project.replace('-', '_')}.egg-info"
                ]
            done = run_step(step, tmp_path, env)
            where = f"{GUIDE.name}:{step.line}"
            report = f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
            assert done.returncode == 0, f"{where} exited with {done.returncode}\n{report}"
            assert not done.stderr, f"{where} wrote to stderr\n{report}"
            if step.expected is not None:
                same, difference = matches(at_niceness(step.expected, own), done.stdout)
                assert same, f"{where} printed other output than the guide shows\n{difference}"
            step.stdout = done.stdout
    finally:
        left = end_strays(token)
    # every step has exited; the workers its plugin started must have gone with it
    assert not left, f"the guide's plugin left workers {left} running"

    # the worked example ran tasks in workers started by the plugin, by object and by name
    using = [s for s in steps if "controller(NiceLauncher()" in s.code]
    by_name = [s for s in steps if 'controller("nice"' in s.code]
    assert len(using) == 1
    assert len(by_name) == 1
    assert using[0].expected is not None
    assert by_name[0].expected is not None
    assert "'success'" in using[0].stdout


@pytest.fixture
def register(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Register launchers as if a package declaring them were installed.

    ``register(entries, files)`` writes the module ``files`` and a
    distribution declaring ``entries`` into a folder put first on
    ``sys.path``; both are gone after the test.
    """
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    modules: list[str] = []
    count = 0

    def register(entries: dict[str, str], files: dict[str, str] | None = None) -> None:
        nonlocal count
        count += 1
        for name, code in (files or {}).items():
            (folder / name).write_text(code)
            modules.append(name.removesuffix(".py"))
        install_metadata(folder, f"launcher-guide-{count}", entries)
        importlib.invalidate_caches()

    yield register
    for module in modules:
        sys.modules.pop(module, None)


def test_the_guide_plugin_registered_by_name_runs_tasks(register: Callable[..., None]) -> None:
    assert "nice" not in pycrew.launchers.available()
    register(
        {"nice": "launcher_guide_plugin:NiceLauncher"},
        {"launcher_guide_plugin.py": plugin_code()},
    )
    assert "nice" in pycrew.launchers.available()
    assert "launcher_guide_plugin" not in sys.modules  # listing imports nothing
    cls = pycrew.launchers.load("nice")
    assert cls is sys.modules["launcher_guide_plugin"].NiceLauncher
    assert issubclass(cls, Launcher)
    own = os.nice(0)
    with pycrew.controller("nice", workers=1, seconds_interval=0.05) as ctl:
        records = ctl.map(os.nice, [0, 0, 0], seconds_timeout=30)
        pids = {r.pid for r in records}
        assert isinstance(ctl.launcher, cls)
    assert [r.result for r in records] == [min(own + INCREMENT, 19)] * 3
    assert pids
    assert not any(psutil.pid_exists(pid) for pid in pids if pid is not None)


def test_the_guide_plugin_passes_env_drops_env_remove_and_kills(
    register: Callable[..., None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    register(
        {"nice": "launcher_guide_plugin:NiceLauncher"},
        {"launcher_guide_plugin.py": plugin_code()},
    )
    launcher = pycrew.launchers.load("nice")(increment=5)  # type: ignore[call-arg]
    monkeypatch.setenv("LAUNCHER_GUIDE_PASSWORD", "hunter2")
    seen = tmp_path / "seen.txt"
    report = (
        "import os, pathlib, sys\n"
        "pathlib.Path(sys.argv[1]).write_text(' '.join([\n"
        "    os.environ.get('LAUNCHER_GUIDE_SECRET', '-'),\n"
        "    os.environ.get('LAUNCHER_GUIDE_PASSWORD', '-'),\n"
        "    str(os.nice(0)),\n"
        "]))\n"
    )

    def spec(worker_id: str, command: list[str]) -> pycrew.launchers.WorkerSpec:
        return pycrew.launchers.WorkerSpec(
            command=command,
            env={"LAUNCHER_GUIDE_SECRET": "s3cret"},
            worker_id=worker_id,
            controller="guide",
            env_remove=frozenset({"LAUNCHER_GUIDE_PASSWORD"}),
        )

    done = launcher.launch_worker(spec("w1", [sys.executable, "-c", report, str(seen)]))
    assert done.wait(timeout=30) == 0
    assert launcher.exit_code(done) == 0
    # spec.env reached the process, env_remove did not, and it ran nicer
    assert seen.read_text() == f"s3cret - {min(os.nice(0) + 5, 19)}"
    assert "s3cret" not in " ".join(done.args)

    # a process that does not leave by itself: terminate_worker and shutdown kill it
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    one, two = launcher.launch_workers([spec("w2", sleeper), spec("w3", sleeper)])
    assert launcher.exit_codes([one, two]) == [None, None]
    launcher.terminate_worker(one)
    assert one.wait(timeout=30) == -9
    started = time.monotonic()
    launcher.shutdown([one, two], seconds=0.2)
    assert time.monotonic() - started < 5
    assert launcher.exit_codes([one, two]) == [-9, -9]
    launcher.terminate_worker(two)  # already gone: no error


BROKEN = {
    "missing module": (
        "launcher_guide_nowhere:NiceLauncher",
        {},
        "could not be loaded: ModuleNotFoundError: No module named 'launcher_guide_nowhere'",
    ),
    "a function": (
        "launcher_guide_function:make_launcher",
        {"launcher_guide_function.py": "def make_launcher():\n    return None\n"},
        "is not a subclass of pycrew.launchers.Launcher but <function make_launcher",
    ),
    "abstract": (
        "launcher_guide_abstract:HalfLauncher",
        {
            "launcher_guide_abstract.py": (
                "from pycrew.launchers import Launcher\n\n\n"
                "class HalfLauncher(Launcher):\n"
                "    def terminate_worker(self, handle):\n"
                "        pass\n"
            )
        },
        "does not implement launch_worker",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_plugin_is_refused_by_name(register: Callable[..., None], case: str) -> None:
    value, files, problem = BROKEN[case]
    register({"broken": value}, files)
    assert "broken" in pycrew.launchers.available()
    with pytest.raises(pycrew.LaunchError) as caught:
        pycrew.launchers.load("broken")
    message = str(caught.value)
    assert message.startswith(f"launcher plugin 'broken' ({value})")
    assert problem in message
    # and the controller refuses it the same way, before starting anything
    with pytest.raises(pycrew.LaunchError, match=re.escape(problem)):
        pycrew.controller("broken", workers=1)


def test_a_launcher_that_needs_arguments_is_refused_by_name(
    register: Callable[..., None],
) -> None:
    register(
        {"picky": "launcher_guide_picky:PickyLauncher"},
        {
            "launcher_guide_picky.py": (
                "from pycrew.launchers import LocalLauncher\n\n\n"
                "class PickyLauncher(LocalLauncher):\n"
                "    def __init__(self, partition):\n"
                "        super().__init__()\n"
            )
        },
    )
    assert pycrew.launchers.load("picky").__name__ == "PickyLauncher"
    with pytest.raises(pycrew.LaunchError, match="'picky' cannot be made without arguments"):
        pycrew.controller("picky")


def test_an_unknown_name_lists_the_registered_ones(register: Callable[..., None]) -> None:
    register({"nice": "launcher_guide_plugin:NiceLauncher"}, {})
    with pytest.raises(pycrew.LaunchError) as caught:
        pycrew.launchers.load("no-such")
    message = str(caught.value)
    assert message.startswith("no launcher named 'no-such' is registered")
    listed = message.rsplit("registered: ", 1)[1].split(", ")
    assert listed == pycrew.launchers.available()
    assert {"local", "slurm", "nice"} <= set(listed)
    with pytest.raises(pycrew.LaunchError, match="no launcher named 'no-such'"):
        pycrew.controller("no-such")
