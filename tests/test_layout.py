"""The package's shape: one folder per actor, small modules, and a worker that stays light.

The layers between the folders are checked by ``lint-imports`` (pyproject.toml);
these tests hold what it does not: sizes, import-free sub-package roots, and
what a real worker process has imported once it runs a task.
"""

from __future__ import annotations

import ast
import sys

import pycrew
from tests.helpers.scripts import ROOT

PACKAGE = ROOT / "src" / "pycrew"
#: one folder per actor (launchers is the public face of _engines)
ACTORS = (
    "_controller",
    "_dispatcher",
    "_engines",
    "_integrations",
    "_operations",
    "_wire",
    "_worker",
    "launchers",
)
WAIT = 60


def test_the_top_of_the_package_is_its_public_face() -> None:
    files = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(files) <= 10, files
    folders = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())
    assert folders == sorted(ACTORS)


def test_every_folder_is_small_and_every_module_under_800_lines() -> None:
    for folder in ACTORS:
        modules = [p for p in (PACKAGE / folder).glob("*.py") if p.name != "__init__.py"]
        assert len(modules) <= 16, (folder, len(modules))
    for path in PACKAGE.rglob("*.py"):
        lines = len(path.read_text().splitlines())
        assert lines <= 800, (path.relative_to(PACKAGE), lines)


def test_a_folder_opens_with_its_role_and_imports_nothing() -> None:
    """A worker imports _worker/__init__.py on its way to the worker: it must cost nothing."""
    for folder in ACTORS[:-1]:
        tree = ast.parse((PACKAGE / folder / "__init__.py").read_text())
        assert ast.get_docstring(tree), folder
        imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
        assert not imports, folder


def test_a_worker_imports_neither_the_users_side_nor_the_dispatcher_nor_the_engines() -> None:
    probe = (
        "import sys\n"
        "sorted(m for m in sys.modules if m.startswith('pycrew.') or m == 'concurrent.futures')"
    )
    with pycrew.local_controller(workers=1) as ctl:
        record = ctl.push(probe).record(WAIT)
    assert record.status == "success", record.error
    loaded = set(record.result)
    assert "pycrew._worker._worker" in loaded  # the probe did look inside a worker
    for actor in ("_controller", "_dispatcher", "_engines", "launchers"):
        assert not [m for m in loaded if m.startswith(f"pycrew.{actor}")], (actor, loaded)
    # `import pycrew` registers the joblib backend's name, and nothing else of integrations
    integrations = {m for m in loaded if m.startswith("pycrew._integrations.")}
    assert integrations <= {"pycrew._integrations._joblib_light"}, integrations
    if sys.version_info >= (3, 11):  # 3.10's futures have a TimeoutError of their own
        assert "concurrent.futures" not in loaded
