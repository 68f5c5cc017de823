"""Every python example in the front-end guides runs, as a user would run it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = ("futures.md",)
#: what some examples must print (page, block index) -> substrings
EXPECT = {
    ("futures.md", 0): ["12\n", "caught: negative width: -1", "success 25 True"],
    ("futures.md", 1): ["0 3"],
    ("futures.md", 2): ["8 0"],
    ("futures.md", 4): ["ValueError", "(2, 3)"],
}


def _blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), re.S)


CASES = [(page, i) for page in PAGES for i in range(len(_blocks(page)))]


@pytest.mark.parametrize(("page", "index"), CASES, ids=[f"{p}-{i}" for p, i in CASES])
def test_example_runs(page: str, index: int, tmp_path: Path) -> None:
    code = _blocks(page)[index]
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for text in EXPECT.get((page, index), []):
        assert text in done.stdout, done.stdout
