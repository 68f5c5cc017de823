"""Every python example in the README, the site's first pages and the front-end guides runs."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest

from tests.helpers.scripts import ROOT, run_python

if TYPE_CHECKING:
    from pathlib import Path

PAGES = (
    "README.md",
    "docs/index.md",
    "docs/quickstart.md",
    "docs/futures.md",
    "docs/graphs.md",
    "docs/environment.md",
    "docs/watching.md",
    "docs/resources.md",
    "docs/performance.md",
)
#: what some examples must print (page, block index) -> substrings
EXPECT = {
    ("README.md", 0): ["6\n", "[4, 10, 18]"],
    ("README.md", 1): ["6\n", "[4, 10, 18]"],
    ("README.md", 2): ["(1024, [4, 9])"],
    ("README.md", 4): ["285\n"],
    ("README.md", 5): ["True"],
    ("README.md", 6): ["3 tasks ended, 3 in the stream"],
    ("docs/index.md", 0): ["49\n", "[0, 1, 4, 9, 16]"],
    ("docs/quickstart.md", 0): ["42\n", "part-1 success 10", "[4, 10, 18]", "7 7"],
    ("docs/futures.md", 0): ["12\n", "caught: negative width: -1", "success 25 True"],
    ("docs/futures.md", 1): ["0 3"],
    ("docs/futures.md", 2): ["8 0"],
    ("docs/futures.md", 4): ["ValueError", "(2, 3)"],
    ("docs/futures.md", 5): ["[0, 1, 4, 9] 25"],
    ("docs/graphs.md", 0): ["100\n"],
    ("docs/graphs.md", 1): ["285\n285\n"],
    ("docs/graphs.md", 2): ["99\n", "['high', 'load', 'low']"],
    ("docs/graphs.md", 3): [
        "error None None",
        "DependencyError: input task 'parse' ended with status error, so this task did not run",
        "child error",
        "DependencyError parse",
        "ValueError(",
    ],
    ("docs/graphs.md", 4): ["True True", "input task 'child' ended with status cancel", "True 5"],
    ("docs/graphs.md", 5): [
        "first: [0, 1, 2], {'again': ([0, 1, 2], [[0, 1, 2]])}",
        "4\n[3, 3]\n3\n",
        "it can only be a task's argument",
    ],
    ("docs/graphs.md", 6): ["True 18", "17\n"],
    ("docs/graphs.md", 7): ["2\n3 0"],
    ("docs/environment.md", 0): ["1\n"],
    ("docs/environment.md", 1): ["[0, 3, 6, 9, 12]"],
    ("docs/environment.md", 2): ["0.5\n"],
    ("docs/environment.md", 3): ["31\n31\n"],
    ("docs/environment.md", 4): ["[0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]"],
    ("docs/environment.md", 5): ["'y': [2, 4, 6]"],
    ("docs/environment.md", 6): ["1 True"],
    ("docs/resources.md", 0): ["True\nno GPU\n"],
    ("docs/resources.md", 1): ["['2', '2', '2']"],
    ("docs/resources.md", 2): ["gpus=3 (at most 2) on this machine"],
    ("docs/resources.md", 3): ["cpu 0\n"],
    ("docs/resources.md", 4): ["trained on 3\n", "trained on 30\n"],
    ("docs/performance.md", 0): ["[3. 3. 3.] [1. 1. 1.]"],
    ("docs/watching.md", 0): ["10 succeeded on"],
    ("docs/watching.md", 1): ["100 tasks ended"],
    ("docs/watching.md", 2): ["http://127.0.0.1:", "[1024, 59049]"],
}


def _blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / page).read_text(), re.S)


CASES = [(page, i) for page in PAGES for i in range(len(_blocks(page)))]


@pytest.mark.parametrize(("page", "index"), CASES, ids=[f"{p}-{i}" for p, i in CASES])
def test_example_runs(page: str, index: int, tmp_path: Path) -> None:
    code = _blocks(page)[index]
    if "slurm_controller(" in code:
        # its partition and modules are a real site's; tests/engines/test_slurm.py runs SLURM
        pytest.skip("an example for a site's own SLURM cluster")
    done = run_python(code, cwd=tmp_path, PYTHONUNBUFFERED="1")
    assert done.returncode == 0, done.stderr
    for text in EXPECT.get((page, index), []):
        assert text in done.stdout, done.stdout
