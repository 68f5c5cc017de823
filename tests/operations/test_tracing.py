"""OpenTelemetry traces: a span per task on the controller, its child on a real worker.

The controller's spans go to the SDK's in-memory exporter. The workers
configure their own provider from ``OTEL_*`` variables (``env=``), with the
SDK's console exporter, whose JSON lands in each worker's log file: the path a
user takes, entry point lookup included. Task bodies are code strings and
builtins, so that workers import nothing of this module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest

import pycrew
from pycrew._controller import _push
from pycrew._operations import _tracing
from tests.helpers.common import wait_until

pytest.importorskip("opentelemetry.sdk", reason="opentelemetry-sdk is not installed")

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

WAIT = 60
#: what makes a worker trace: the SDK's console exporter, found by its entry point
WORKER_ENV = {"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "pycrew-test-worker"}
SLEEP = "import time\ntime.sleep(seconds)"


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    """This process's spans, in memory; the global provider is put back as it was after.

    The API lets a process set its provider once; other test modules must
    not trace (a worker's imports are checked elsewhere), so the private
    once-guard is reset at the end.
    """
    memory = InMemorySpanExporter()
    before = trace.get_tracer_provider()
    if isinstance(before, TracerProvider):
        provider = before  # someone set one already: listen to it too
        owned = False
    else:
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
        owned = True
    provider.add_span_processor(SimpleSpanProcessor(memory))
    try:
        yield memory
    finally:
        provider.shutdown()
        if owned:
            trace._TRACER_PROVIDER = None  # type: ignore[attr-defined]
            trace._TRACER_PROVIDER_SET_ONCE = trace.Once()  # type: ignore[attr-defined]


@pytest.fixture
def spans(exporter: InMemorySpanExporter) -> InMemorySpanExporter:
    exporter.clear()
    return exporter


def _start(ctl: pycrew.Controller) -> pycrew.Controller:
    ctl.start()
    if getattr(ctl, "_tracer", None) is None:
        # until Controller.start() decides it itself (the lead wires tracer() there)
        ctl._tracer = _tracing.tracer()  # type: ignore[attr-defined]
    return ctl


def _local(logs: Path, **options: Any) -> pycrew.Controller:
    options.setdefault("workers", 1)
    ctl = pycrew.local_controller(
        seconds_interval=0.05, log_directory=logs, env=WORKER_ENV, **options
    )
    return _start(ctl)


def _worker_spans(logs: Path) -> list[dict[str, Any]]:
    """The spans the console exporter wrote into the workers' logs (JSON among log lines)."""
    decoder = json.JSONDecoder()
    found = []
    for path in sorted(logs.rglob("*")):
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        at = 0
        while (at := text.find("{\n", at)) >= 0:
            try:
                value, end = decoder.raw_decode(text, at)
            except ValueError:
                at += 1
                continue
            if isinstance(value, dict) and "context" in value:
                found.append(value)
            at = end
    return found


def _wait_worker_spans(logs: Path, count: int) -> list[dict[str, Any]]:
    wait_until(lambda: len(_worker_spans(logs)) >= count, 30, f"{count} worker span(s)")
    return _worker_spans(logs)


def _hex(value: int, width: int) -> str:
    return f"0x{value:0{width}x}"


def _client(spans: InMemorySpanExporter, name: str) -> ReadableSpan:
    found = [
        s
        for s in spans.get_finished_spans()
        if s.kind is SpanKind.CLIENT and (s.attributes or {}).get("pycrew.task.name") == name
    ]
    assert len(found) == 1, (name, found)
    return found[0]


def _served(worker_spans: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [w for w in worker_spans if w["attributes"].get("pycrew.task.name") == name]
    assert len(found) == 1, (name, found)
    return found[0]


def _assert_child(client: ReadableSpan, served: dict[str, Any]) -> None:
    assert client.context is not None
    assert served["kind"] == "SpanKind.SERVER"
    assert served["context"]["trace_id"] == _hex(client.context.trace_id, 32)
    assert served["parent_id"] == _hex(client.context.span_id, 16)


# ------------------------------------------------------------------- tests
def test_one_trace_per_task_and_the_workers_span_is_its_child(
    spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    with _local(tmp_path) as ctl:
        records = ctl.map(abs, [-1, -2, -3], names=["abs_1", "abs_2", "abs_3"])
        assert [r.result for r in records] == [1, 2, 3]
    served = _wait_worker_spans(tmp_path, 3)
    traces = set()
    for record in records:
        client = _client(spans, record.name)
        assert client.context is not None
        traces.add(client.context.trace_id)
        assert client.parent is None  # nothing was current at the push
        assert client.status.status_code is StatusCode.UNSET
        assert client.name == "abs"
        attributes = dict(client.attributes or {})
        assert attributes["rpc.system"] == "pycrew"
        assert attributes["pycrew.function"] == "abs"
        assert attributes["pycrew.controller"] == ctl.name
        assert attributes["pycrew.status"] == "success"
        assert attributes["pycrew.attempts"] == 1
        assert attributes["pycrew.worker.id"] == record.worker
        worker_span = _served(served, record.name)
        _assert_child(client, worker_span)
        assert worker_span["attributes"]["pycrew.worker.id"] == record.worker
        assert worker_span["attributes"]["process.pid"] == record.pid
        assert worker_span["resource"]["attributes"]["service.name"] == "pycrew-test-worker"
    assert len(traces) == 3


def test_a_span_current_at_push_is_the_root_of_the_trace(
    spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    with _local(tmp_path) as ctl:
        with trace.get_tracer("a user's script").start_as_current_span("analysis") as root:
            future = ctl.push(abs, -5, name="inside")
        assert future.result(WAIT) == 5
    client = _client(spans, "inside")
    assert client.parent is not None
    assert client.parent.span_id == root.get_span_context().span_id
    assert client.context is not None
    assert client.context.trace_id == root.get_span_context().trace_id
    _assert_child(client, _served(_wait_worker_spans(tmp_path, 1), "inside"))


def test_a_task_that_raises_is_an_error_on_both_sides(
    spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    with _local(tmp_path) as ctl:
        record = ctl.push("raise ValueError('boom')", name="raises").record(WAIT)
        assert record.status == "error"
    client = _client(spans, "raises")
    assert client.status.status_code is StatusCode.ERROR
    assert client.status.description == "ValueError: boom"
    assert (client.attributes or {})["error.type"] == "ValueError"
    assert (client.attributes or {})["pycrew.status"] == "error"
    served = _served(_wait_worker_spans(tmp_path, 1), "raises")
    _assert_child(client, served)
    assert served["status"]["status_code"] == "ERROR"
    (event,) = served["events"]
    assert event["name"] == "exception"
    assert event["attributes"]["exception.type"] == "ValueError"
    assert "ValueError: boom" in event["attributes"]["exception.stacktrace"]


def test_crash_timeout_and_cancel(spans: InMemorySpanExporter, tmp_path: Path) -> None:
    with _local(tmp_path, workers=2, crashes_max=1) as ctl:
        crashed = ctl.push("import os\nos._exit(3)", name="crashes")
        late = ctl.push(SLEEP, data={"seconds": 60}, name="late", seconds_timeout=0.5)
        assert crashed.record(WAIT).status == "crash"
        assert late.record(WAIT).status == "timeout"
        stopped = ctl.push(SLEEP, data={"seconds": 60}, name="stopped")
        wait_until(stopped.running, WAIT, "the task to start")
        assert stopped.cancel()
        assert stopped.record(WAIT).status == "cancel"
    crash = _client(spans, "crashes")
    assert crash.status.status_code is StatusCode.ERROR
    assert (crash.attributes or {})["error.type"] == "crash"
    timeout = _client(spans, "late")
    assert timeout.status.status_code is StatusCode.ERROR
    assert (timeout.attributes or {})["error.type"] == "timeout"
    cancel = _client(spans, "stopped")
    # the caller's own decision: not an error
    assert cancel.status.status_code is StatusCode.UNSET
    assert (cancel.attributes or {})["pycrew.status"] == "cancel"


def test_a_worker_that_leaves_on_its_own_sends_its_spans(
    spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    with _local(tmp_path, seconds_idle=0.5) as ctl:
        assert ctl.push(abs, -1, name="before_idle").result(WAIT) == 1
        # the worker leaves (idle) while the controller runs: no terminate() involved
        wait_until(lambda: ctl.workers_status()["connected"] == 0, WAIT, "the worker to leave")
        _assert_child(
            _client(spans, "before_idle"),
            _served(_wait_worker_spans(tmp_path, 1), "before_idle"),
        )


def test_worker_events_are_root_spans_linked_to_their_task(
    spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    with _local(tmp_path, crashes_max=2, retry_crashes=True) as ctl:
        dispatcher = ctl._dispatcher
        assert dispatcher is not None
        observed = dispatcher.observed
        if not any(isinstance(f, _tracing.EventSpans) for f in observed.listeners):
            # until Controller.start() registers it itself (the lead wires it there)
            observed.listen(_tracing.EventSpans(ctl._tracer, ctl.name))  # type: ignore[attr-defined]
        record = ctl.push("import os\nos._exit(3)", name="crashes_twice").record(WAIT)
        assert record.status == "crash"
    finished = spans.get_finished_spans()
    events = {s.name: s for s in finished if s.name.startswith("pycrew worker ")}
    expected = {"launch", "connect", "disconnect", "retry", "crash"}
    assert {f"pycrew worker {kind}" for kind in expected} <= set(events), sorted(events)
    task = _client(spans, "crashes_twice")
    assert task.context is not None
    for name, span in events.items():
        assert span.parent is None, name  # a worker belongs to no task's trace
        assert span.kind is SpanKind.INTERNAL
    for kind in ("retry", "crash"):
        span = events[f"pycrew worker {kind}"]
        assert [link.context.span_id for link in span.links] == [task.context.span_id]
        assert span.status.status_code is StatusCode.ERROR
        assert (span.attributes or {})["pycrew.task.name"] == "crashes_twice"
    assert events["pycrew worker connect"].status.status_code is StatusCode.UNSET
    assert (task.attributes or {})["pycrew.attempts"] == 2


def test_controller_start_and_terminate_spans(spans: InMemorySpanExporter) -> None:
    tracer = _tracing.tracer()
    assert tracer is not None
    _tracing.controller_event(
        tracer, "start", name="c1", url="tcp://127.0.0.1:1", engine="local", begun=0.0
    )
    _tracing.controller_event(tracer, "terminate", name="c1")
    _tracing.controller_event(None, "start", name="off")  # off: nothing, no error
    by_name = {s.name: s for s in spans.get_finished_spans()}
    start = by_name["pycrew controller start"]
    assert start.kind is SpanKind.INTERNAL
    assert dict(start.attributes or {}) == {
        "pycrew.controller": "c1",
        "pycrew.url": "tcp://127.0.0.1:1",
        "pycrew.engine": "local",
    }
    assert "pycrew controller terminate" in by_name
    assert len(by_name) == 2


def test_tracing_off_sends_nothing_extra(spans: InMemorySpanExporter) -> None:
    with pycrew.local_controller(workers=1) as ctl:
        ctl.start()
        ctl._tracer = None  # type: ignore[attr-defined]  # as start() decides without a provider
        task = _push.Recipe(ctl, abs, None, None, None).build((-1,), {}, "quiet", None)
        assert b"traceparent" not in _push._frames.pieces(task.frame)[0]
        assert ctl.push(abs, -1, name="quiet").result(WAIT) == 1
        ctl._tracer = _tracing.tracer()  # type: ignore[attr-defined]
        traced = _push.Recipe(ctl, abs, None, None, None).build((-1,), {}, "loud", None)
        assert b"traceparent" in _push._frames.pieces(traced.frame)[0]
    assert not [s for s in spans.get_finished_spans() if s.kind is SpanKind.CLIENT]


PROBE = """
import sys
from pycrew._operations import _tracing
t = _tracing.tracer()
from opentelemetry import trace
print(t is not None, type(trace.get_tracer_provider()).__name__)
"""


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "False ProxyTracerProvider"),
        ({"OTEL_TRACES_EXPORTER": "none"}, "False ProxyTracerProvider"),
        ({"OTEL_TRACES_EXPORTER": "console"}, "True TracerProvider"),
        (
            {"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"},
            "False ProxyTracerProvider",
        ),
        ({"OTEL_TRACES_EXPORTER": "no-such-exporter"}, "False ProxyTracerProvider"),
    ],
)
def test_off_without_a_provider_and_made_from_the_environment(
    env: dict[str, str], expected: str
) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected, done.stderr
    if "no-such" in env.get("OTEL_TRACES_EXPORTER", ""):
        assert "no-such-exporter" in done.stderr  # said why, once


# ---------------------------------------------------------------- on SLURM
def test_a_slurm_workers_span_is_the_child_of_the_controllers(
    cluster: None, spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    ctl = pycrew.slurm_controller(
        workers=1,
        seconds_interval=0.1,
        env=WORKER_ENV,
        log_output=str(tmp_path / "worker-%A_%a.log"),
        log_error=None,
    )
    with _start(ctl):
        with trace.get_tracer("a user's script").start_as_current_span("on the cluster"):
            future = ctl.push(abs, -7, name="on_slurm")
        record = future.record(WAIT)
        assert record.result == 7
        assert ctl.url.startswith("tls+tcp://")
    client = _client(spans, "on_slurm")
    assert client.parent is not None
    served = _served(_wait_worker_spans(tmp_path, 1), "on_slurm")
    _assert_child(client, served)
    assert served["attributes"]["pycrew.worker.id"] == record.worker


@pytest.mark.parametrize(
    "carrier",
    [
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"},
        {
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "tracestate": "vendor=value,other=1",
        },
        {"traceparent": "00-00000000000000000000000000000000-b7ad6b7169203331-01"},
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331"},
        {"traceparent": "zz-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319g-b7ad6b7169203331-01"},
        {},
    ],
    ids=["sampled", "unsampled", "tracestate", "zero-id", "short", "version", "not-hex", "none"],
)
def test_a_worker_reads_the_trace_context_as_w3c_does(carrier: dict[str, str]) -> None:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    ours = trace.get_current_span(_tracing._use().parent(carrier)).get_span_context()
    w3c = TraceContextTextMapPropagator().extract(carrier)
    assert ours == trace.get_current_span(w3c).get_span_context()
