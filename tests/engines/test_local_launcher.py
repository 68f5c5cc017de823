"""LocalLauncher's arguments: wrong types and a missing interpreter, named before any launch."""

from __future__ import annotations

import shutil
import sys
from typing import TYPE_CHECKING, Any

import pytest

import pycrew
from pycrew.launchers import LocalLauncher

if TYPE_CHECKING:
    from pathlib import Path


@pytest.mark.parametrize("value", [123, 1.5, ["logs"]])
def test_a_log_directory_that_is_no_path_is_an_argument_type_error(value: Any) -> None:
    with pytest.raises(pycrew.ArgumentTypeError, match="log_directory must be None or a path"):
        pycrew.local_controller(log_directory=value)
    with pytest.raises(pycrew.ArgumentTypeError, match=type(value).__name__):
        LocalLauncher(log_directory=value)


def test_a_python_that_is_no_path_is_an_argument_type_error() -> None:
    with pytest.raises(pycrew.ArgumentTypeError, match="python must be None or the path"):
        pycrew.local_controller(python=123)  # type: ignore[arg-type]


def test_a_missing_interpreter_is_named_before_any_launch(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-python"
    launcher = LocalLauncher(python=missing)
    with pytest.raises(pycrew.LaunchError, match=f"'{missing}': not found"):
        launcher.validate()
    with pytest.raises(pycrew.LaunchError, match="'no-such-python-here': not found"):
        LocalLauncher(python="no-such-python-here").validate()


def test_an_interpreter_that_cannot_run_is_named_before_any_launch(tmp_path: Path) -> None:
    plain = tmp_path / "python-not-executable"
    plain.write_text("#!/bin/sh\n")
    plain.chmod(0o644)
    with pytest.raises(pycrew.LaunchError, match=f"'{plain}': not executable"):
        LocalLauncher(python=plain).validate()
    with pytest.raises(pycrew.LaunchError, match="not executable"):
        LocalLauncher(python=tmp_path).validate()  # a folder


def test_an_interpreter_that_exists_passes_by_path_or_by_name() -> None:
    LocalLauncher().validate()
    LocalLauncher(python=sys.executable).validate()
    name = "python3" if shutil.which("python3") else None
    if name is not None:
        LocalLauncher(python=name).validate()
