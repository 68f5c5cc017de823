"""Custom serializers: a controller says how a type travels, both ways, at any depth."""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING, Any

import pytest

import pycrew
from tests.helpers import tasks
from tests.helpers.scripts import run_python

if TYPE_CHECKING:
    from pathlib import Path

WAIT = 120
POINTS = {tasks.Point: (tasks.point_dumps, tasks.point_loads)}


def test_a_type_travels_through_its_serializer_both_ways_at_any_depth() -> None:
    with pycrew.local_controller(workers=1, serializers=POINTS) as ctl:
        points = {"a": [tasks.Point(1, 2)], "b": [tasks.Point(3, 4), tasks.Point(5, 6)]}
        seen, moved = ctl.push(tasks.move, points, 10).result(timeout=WAIT)
        assert seen == ["serializer"] * 3  # how they reached the worker
        assert [(p.x, p.y) for p in moved] == [(11, 2), (13, 4), (15, 6)]
        assert {p.via for p in moved} == {"serializer"}  # how they came back


def test_without_a_serializer_the_type_travels_by_pickle() -> None:
    with pycrew.local_controller(workers=1) as ctl:
        seen, moved = ctl.push(tasks.move, {"a": [tasks.Point(1, 2)]}, 1).result(timeout=WAIT)
        assert seen == ["made"]
        assert moved[0].via == "worker"


ARROW = """
import pyarrow as pa
import pycrew

def arrow_dumps(table):
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()  # a pyarrow.Buffer: sent out of band, uncopied

def arrow_loads(buffer):
    table = pa.ipc.open_stream(pa.py_buffer(buffer)).read_all()
    return table.replace_schema_metadata({"via": "arrow ipc"})

def enrich(tables):
    table = tables["input"]
    via = table.schema.metadata[b"via"].decode()
    doubled = table.append_column("y", pa.compute.multiply(table["x"], 2))
    return via, {"output": doubled}

table = pa.table({"x": list(range(200_000))})
with pycrew.FACTORY(serializers={pa.Table: (arrow_dumps, arrow_loads)}) as ctl:
    via, out = ctl.push(enrich, {"input": table}).result(timeout=120)
    result = out["output"]
    print("worker got", via)
    print("came back", result.schema.metadata[b"via"].decode())
    print("sum", sum(result["y"].to_pylist()))
"""


@pytest.mark.parametrize("factory", ["local_controller", "sequential_controller"])
def test_pyarrow_tables_travel_as_arrow_ipc(tmp_path: Path, factory: str) -> None:
    pytest.importorskip("pyarrow")
    code = textwrap.dedent(ARROW.replace("FACTORY", factory))
    # the serializer functions live in the script: they travel by value
    done = run_python(code, script=tmp_path / "arrow.py", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "worker got arrow ipc" in done.stdout
    assert "came back arrow ipc" in done.stdout
    assert f"sum {2 * sum(range(200_000))}" in done.stdout


def test_serializer_tables_are_checked() -> None:
    bad: list[Any] = [
        {"Point": POINTS[tasks.Point]},
        {tasks.Point: tasks.point_dumps},
        {tasks.Point: (tasks.point_dumps, 3)},
        [(tasks.Point, POINTS[tasks.Point])],
    ]
    for serializers in bad:
        with pytest.raises(pycrew.ArgumentTypeError, match="serializers"):
            pycrew.local_controller(serializers=serializers)


def test_a_serializer_that_raises_fails_the_push_or_the_task_not_the_worker() -> None:
    def refuse(point: tasks.Point) -> bytes:
        raise ValueError("no thanks")

    with pycrew.local_controller(
        workers=1, serializers={tasks.Point: (refuse, tasks.point_loads)}
    ) as ctl:
        with pytest.raises(pycrew.ArgumentTypeError, match="no thanks"):
            ctl.push(tasks.move, {"a": [tasks.Point(1, 2)]}, 1)
        # a result the worker cannot serialize becomes that task's error
        record = ctl.push(tasks.move, {}, 1).record(timeout=WAIT)
        assert record.status == "success"  # no Point in it
        failing = ctl.push(lambda: tasks.Point(1, 1)).record(timeout=WAIT)
        assert failing.status == "error"
        assert "no thanks" in (failing.error or "")
        assert ctl.push(tasks.add, 1, 2).result(timeout=WAIT) == 3
