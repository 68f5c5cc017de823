"""Per-task resources with real local workers: shapes, GPU pinning, routing.

The GPUs here are declared ids (``gpus=[0, 1]``): no GPU is needed to see
that each worker is given its own through ``CUDA_VISIBLE_DEVICES``.
"""

from __future__ import annotations

import concurrent.futures
import os
from typing import TYPE_CHECKING

import pytest

import pycrew
from pycrew._engines import _machine
from pycrew._resources import Resources, resources, size_bytes
from tests.helpers import shape_tasks, tasks
from tests.helpers.common import wait_until

if TYPE_CHECKING:
    from pathlib import Path

WAIT = 60


# ----------------------------------------------------------------- the value
def test_a_shape_is_read_from_a_dict_and_sizes_from_text() -> None:
    shape = resources({"cpus": 2, "memory": "8 GB", "gpus": 1, "license": 3})
    assert shape == Resources(cpus=2, memory=8 * 10**9, gpus=1, custom=(("license", 3),))
    assert size_bytes("512 MiB") == 512 * 2**20
    assert size_bytes("1.5G") == 1_500_000_000
    assert size_bytes(1000) == 1000
    assert resources(None) is None
    assert resources({"gpus": 0}) is None  # asks for nothing: the plain path
    assert str(shape) == "cpus=2, memory=8 GB, gpus=1, license=3"


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ({"gpus": -1}, pycrew.ArgumentError),
        ({"gpus": 1.5}, pycrew.ArgumentTypeError),
        ({"gpus": True}, pycrew.ArgumentTypeError),
        ({"memory": "lots"}, pycrew.ArgumentError),
        ({"not a name": 1}, pycrew.ArgumentError),
        ([("gpus", 1)], pycrew.ArgumentTypeError),
        ("gpus=1", pycrew.ArgumentTypeError),
    ],
)
def test_a_bad_shape_is_a_clear_error(value: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        resources(value)


def test_a_bigger_shape_covers_a_smaller_one() -> None:
    big = Resources(cpus=4, memory=10**9, gpus=2, custom=(("license", 1),))
    assert big.covers(Resources(cpus=2, gpus=1))
    assert not big.covers(Resources(gpus=3))
    assert not Resources(gpus=1).covers(Resources(custom=(("license", 1),)))
    assert big.shortfall(Resources(gpus=3, custom=(("tape", 1),))) == [
        "gpus=3 (at most 2)",
        "tape=1 (at most 0)",
    ]


# --------------------------------------------------------------- local GPUs
def test_two_gpu_tasks_run_at_once_on_their_own_gpus_and_a_third_waits(tmp_path: Path) -> None:
    with pycrew.local_controller(workers=4, gpus=[0, 1]) as ctl:
        held = [
            ctl.push(shape_tasks.hold, str(tmp_path), str(i), resources={"gpus": 1})
            for i in range(3)
        ]
        wait_until(
            lambda: len(list(tmp_path.glob("started-*"))) == 2, WAIT, "two GPU tasks to start"
        )
        # the third has no GPU to go to: it stays queued, and no third worker has one
        assert ctl.status()["tasks"]["queued"] == 1
        first = sorted(p.read_text() for p in tmp_path.glob("started-*"))
        assert first == ["0", "1"]
        (tmp_path / "go").touch()
        seen = [f.result(timeout=WAIT) for f in held]
        assert sorted(s["CUDA_VISIBLE_DEVICES"] for s in seen[:2]) != [None, None]
        assert {s["CUDA_VISIBLE_DEVICES"] for s in seen} == {"0", "1"}
        assert all(s["ROCR_VISIBLE_DEVICES"] == s["CUDA_VISIBLE_DEVICES"] for s in seen)
        # a task without a shape runs on a worker that has no GPU of its own
        plain = ctl.push(shape_tasks.environment).result(timeout=WAIT)
        assert plain["CUDA_VISIBLE_DEVICES"] is None
        assert plain["pid"] not in {s["pid"] for s in seen}


def test_a_shape_no_worker_can_have_fails_at_push() -> None:
    with pycrew.local_controller(workers=2, gpus=[0, 1]) as ctl:
        with pytest.raises(pycrew.ArgumentError, match=r"gpus=3 \(at most 2\)"):
            ctl.push(shape_tasks.environment, resources={"gpus": 3})
        with pytest.raises(pycrew.ArgumentError, match="license"):
            ctl.walk(tasks.add, [1, 2], resources={"license": 1})
        assert ctl.unresolved() == 0  # nothing was left waiting


def test_cpus_set_the_thread_counts_and_memory_the_limit() -> None:
    # capacity= says the machine has 4 cores and 8 GiB, whatever this one has
    with pycrew.local_controller(workers=1, capacity={"cpus": 4, "memory": "8 GiB"}) as ctl:
        asked = {"cpus": 2, "memory": "3 GiB"}
        seen = ctl.push(shape_tasks.environment, resources=asked).result(timeout=WAIT)
    assert seen["OMP_NUM_THREADS"] == seen["MKL_NUM_THREADS"] == "2"
    assert seen["OPENBLAS_NUM_THREADS"] == "2"
    assert seen["PYCREW_MEMORY_MAX"] == str(3 * 2**30)
    assert seen["CUDA_VISIBLE_DEVICES"] is None


def test_named_counts_are_shared_out_as_capacity_says(tmp_path: Path) -> None:
    with pycrew.local_controller(workers=3, capacity={"license": 1}) as ctl:
        held = [
            ctl.push(shape_tasks.hold, str(tmp_path), str(i), resources={"license": 1})
            for i in range(2)
        ]
        wait_until(lambda: any(tmp_path.glob("started-*")), WAIT, "a licensed task to start")
        assert ctl.status()["tasks"]["queued"] == 1  # one license: one at a time
        (tmp_path / "go").touch()
        assert len({f.result(timeout=WAIT)["pid"] for f in held}) == 1


# ------------------------------------------------------------------ routing
def test_tasks_with_and_without_a_shape_keep_to_their_own_workers() -> None:
    with pycrew.local_controller(workers=4, gpus=["GPU-a", "GPU-b"]) as ctl:
        shaped = ctl.walk(shape_tasks.environment_of, range(6), resources={"gpus": 1})
        plain = ctl.walk(shape_tasks.environment_of, range(6))
        shaped_seen = [f.result(timeout=WAIT) for f in shaped]
        plain_seen = [f.result(timeout=WAIT) for f in plain]
    assert {s["CUDA_VISIBLE_DEVICES"] for s in shaped_seen} <= {"GPU-a", "GPU-b"}
    assert all(s["CUDA_VISIBLE_DEVICES"] is None for s in plain_seen)
    assert not {s["pid"] for s in shaped_seen} & {s["pid"] for s in plain_seen}


def test_a_bigger_idle_worker_takes_a_smaller_task(tmp_path: Path) -> None:
    # one worker at most: the two-GPU worker is the only one there will be
    with pycrew.local_controller(workers=1, gpus=[0, 1]) as ctl:
        big = ctl.push(shape_tasks.environment, resources={"gpus": 2}).result(timeout=WAIT)
        small = ctl.push(shape_tasks.environment, resources={"gpus": 1}).result(timeout=WAIT)
    assert big["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert small["pid"] == big["pid"]


def test_a_worker_of_another_shape_makes_room_when_idle() -> None:
    with pycrew.local_controller(workers=2, gpus=[0]) as ctl:
        first = ctl.push(shape_tasks.environment, resources={"gpus": 1}).result(timeout=WAIT)
        # the only GPU is held by an idle worker of another shape: it leaves for this one
        second = ctl.push(shape_tasks.environment, resources={"gpus": 1, "cpus": 1}).result(
            timeout=WAIT
        )
    assert first["CUDA_VISIBLE_DEVICES"] == second["CUDA_VISIBLE_DEVICES"] == "0"
    assert first["pid"] != second["pid"]


def test_the_controller_default_applies_unless_a_push_says_otherwise() -> None:
    with pycrew.local_controller(workers=2, gpus=[7], resources={"gpus": 1}) as ctl:
        default = ctl.push(shape_tasks.environment).result(timeout=WAIT)
        more = ctl.push(shape_tasks.environment, resources={"cpus": 1}).result(timeout=WAIT)
    assert default["CUDA_VISIBLE_DEVICES"] == "7"
    assert more["CUDA_VISIBLE_DEVICES"] == "7"
    assert more["OMP_NUM_THREADS"] == "1"


def test_map_and_the_executor_ask_for_resources() -> None:
    with pycrew.local_controller(workers=2, gpus=[3]) as ctl:
        records = ctl.map(shape_tasks.environment_of, [1, 2], resources={"gpus": 1})
        assert {r.result["CUDA_VISIBLE_DEVICES"] for r in records} == {"3"}
        with ctl.executor() as executor:
            on_gpu = pycrew.with_resources(shape_tasks.environment_of, gpus=1)
            assert on_gpu(5)["pid"]  # still the function, called here
            seen = executor.submit(on_gpu, 1).result(timeout=WAIT)
            assert seen["CUDA_VISIBLE_DEVICES"] == "3"
            mapped = list(executor.map(on_gpu, range(4), chunksize=2, timeout=WAIT))
            assert {s["CUDA_VISIBLE_DEVICES"] for s in mapped} == {"3"}


def test_an_executor_made_with_resources_gives_them_to_every_task() -> None:
    with pycrew.Executor(max_workers=1, gpus=[4], resources={"gpus": 1}) as executor:
        seen = executor.submit(shape_tasks.environment).result(timeout=WAIT)
    assert seen["CUDA_VISIBLE_DEVICES"] == "4"


def test_cancelling_a_queued_shaped_task_leaves_the_rest_running(tmp_path: Path) -> None:
    with pycrew.local_controller(workers=2, gpus=[0]) as ctl:
        running = ctl.push(shape_tasks.hold, str(tmp_path), "a", resources={"gpus": 1})
        queued = ctl.push(shape_tasks.environment, resources={"gpus": 1})
        wait_until(lambda: any(tmp_path.glob("started-*")), WAIT, "the first to start")
        assert queued.cancel()
        (tmp_path / "go").touch()
        assert running.result(timeout=WAIT)["CUDA_VISIBLE_DEVICES"] == "0"
        after = ctl.push(shape_tasks.environment, resources={"gpus": 1}).result(timeout=WAIT)
        assert after["CUDA_VISIBLE_DEVICES"] == "0"
        with pytest.raises(concurrent.futures.CancelledError):
            queued.result(timeout=WAIT)


# ------------------------------------------------------------------- groups
def test_a_group_sends_a_task_to_a_member_that_can_have_its_shape() -> None:
    cpu = pycrew.local_controller(name="cpu", workers=1, gpus=[])
    gpu = pycrew.local_controller(name="gpu", workers=1, gpus=[2], resources={"gpus": 1})
    with pycrew.ControllerGroup(cpu, gpu) as group:
        anywhere = group.push(shape_tasks.environment).result(timeout=WAIT)
        on_gpu = group.push(shape_tasks.environment, resources={"gpus": 1})
        assert on_gpu.result(timeout=WAIT)["CUDA_VISIBLE_DEVICES"] == "2"
        mapped = group.map(shape_tasks.environment_of, [1], resources={"gpus": 1})
        assert mapped[0].result["CUDA_VISIBLE_DEVICES"] == "2"
        named = group.push(shape_tasks.environment, controller="gpu").result(timeout=WAIT)
        assert named["CUDA_VISIBLE_DEVICES"] == "2"  # the member's default shape
        with pytest.raises(pycrew.ArgumentError, match="'cpu' lacks gpus=2"):
            group.push(shape_tasks.environment, resources={"gpus": 2})
    assert anywhere["CUDA_VISIBLE_DEVICES"] is None


def test_status_names_each_workers_shape() -> None:
    with pycrew.local_controller(workers=2, gpus=[0]) as ctl:
        ctl.push(shape_tasks.environment, resources={"gpus": 1, "cpus": 1}).result(timeout=WAIT)
        ctl.push(shape_tasks.environment).result(timeout=WAIT)
        shapes = sorted(str(row["shape"]) for row in ctl.status()["worker_rows"])
    assert shapes == ["None", "cpus=1, gpus=1"]


# ------------------------------------------------------------ memory limit
def test_a_task_over_its_memory_is_a_crash_that_names_the_limit_and_the_peak() -> None:
    with pycrew.local_controller(workers=1, retry_crashes=False) as ctl:
        over = ctl.push(tasks.hold_memory, 600, resources={"memory": "250 MB"})
        exc = over.exception(timeout=WAIT)
        assert isinstance(exc, pycrew.TaskCrashError), exc
        reason = exc.record.error or ""
        assert "over its limit of 250 MB" in reason
        assert "task used" in reason
        # the same shape again: a fresh worker, and a task within the limit succeeds
        within = ctl.push(tasks.hold_memory, 20, 0.0, resources={"memory": "250 MB"})
        assert within.result(timeout=WAIT) == 20
        assert (ctl.summary().crash, ctl.summary().success) == (1, 1)


def test_a_task_that_keeps_going_over_its_memory_goes_to_a_bigger_backup() -> None:
    big = pycrew.local_controller(name="big", workers=1, resources={"memory": "2 GB"})
    small = pycrew.local_controller(
        name="small", workers=1, backup=big, crashes_max=1, retry_crashes=True
    )
    with big, small:
        # 400 MB, held a while so that the small worker's guard sees it over
        # its limit: within the big one's, where it then returns
        future = small.push(tasks.hold_memory, 400, 3.0, resources={"memory": "250 MB"})
        assert future.result(timeout=WAIT) == 400
        record = future.record(timeout=WAIT)
    assert record.controller == "big"
    assert record.attempts == 2


# ------------------------------------------------------------ the machine
def test_gpus_come_from_the_devices_this_process_may_see(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    with pycrew.local_controller(workers=2) as ctl:
        seen = [ctl.push(shape_tasks.environment, resources={"gpus": 1}) for _ in range(2)]
        assert {f.result(timeout=WAIT)["CUDA_VISIBLE_DEVICES"] for f in seen} <= {"2", "3"}
        with pytest.raises(pycrew.ArgumentError, match=r"gpus=3 \(at most 2\)"):
            ctl.push(shape_tasks.environment, resources={"gpus": 3})


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"CUDA_VISIBLE_DEVICES": "0,1"}, ("0", "1")),
        ({"CUDA_VISIBLE_DEVICES": "GPU-3c1f, MIG-7"}, ("GPU-3c1f", "MIG-7")),
        ({"CUDA_VISIBLE_DEVICES": ""}, ()),
        ({"CUDA_VISIBLE_DEVICES": "-1"}, ()),
        ({"ROCR_VISIBLE_DEVICES": "1"}, ("1",)),
    ],
)
def test_visible_gpus_read_the_runtimes_variables(
    environ: dict[str, str], expected: tuple[str, ...] | None
) -> None:
    assert _machine.visible_gpus(environ) == expected


def test_nvidia_smi_lists_the_gpus_where_nothing_limits_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a stand-in for nvidia-smi: it answers the one query pycrew asks, as the real one prints it
    smi = tmp_path / "nvidia-smi"
    smi.write_text(
        '#!/bin/sh\n[ "$1 $2" = "--query-gpu=index --format=csv,noheader" ] || exit 9\n'
        "printf '0\\n1\\n2\\n'\n"
    )
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    for name in ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES"):
        monkeypatch.delenv(name, raising=False)
    shape, ids = _machine.local_machine(None, None)
    assert ids == ("0", "1", "2")
    assert shape.gpus == 3
    assert shape.cpus >= 1
    assert shape.memory > 0


@pytest.mark.parametrize(
    ("gpus", "error"),
    [
        ("0,1", pycrew.ArgumentTypeError),
        ([0, 0], pycrew.ArgumentError),
        ([True], pycrew.ArgumentError),
        ([""], pycrew.ArgumentError),
    ],
)
def test_bad_gpu_ids_are_refused(gpus: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        pycrew.local_controller(gpus=gpus)  # type: ignore[arg-type]


def test_capacity_names_counts_and_may_lower_the_machines_own() -> None:
    with pycrew.local_controller(capacity={"cpus": 1, "license": 2}) as ctl:
        with pytest.raises(pycrew.ArgumentError, match=r"cpus=2 \(at most 1\)"):
            ctl.push(shape_tasks.environment, resources={"cpus": 2})
        with pytest.raises(pycrew.ArgumentError, match="capacity"):
            pycrew.local_controller(capacity={"gpus": 2})
