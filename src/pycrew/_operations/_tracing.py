"""OpenTelemetry traces: one span per task, from push to resolution, continued on its worker.

```
 user's process                                         worker process
 Controller.start() ─► tracer(): a tracer, or None (off: a push pays one `if`)
 push ─► TaskSpan: CLIENT span, child of the span current at push
     └─► traceparent (propagation API) in the task's payload ──TASK──► evaluate()
                                                   serve(): SERVER span, its child,
                                                   current while the task runs
 future settles ─► TaskSpan.end(): status, attempts, worker       end() ─► flush() at exit
 start/terminate ─► controller_event(): INTERNAL span
 live-state events (launch, connect, exit, crash, ...) ─► EventSpans: INTERNAL root
     spans, linked (never parented) to the span of the task they name
```

Nothing here imports ``opentelemetry`` until asked: ``tracer()`` on the
controller at each start, ``serve()`` on a worker at the first task that
carries a trace context. Where no tracer provider is configured (the API's
proxy or no-op one) tracing is off, unless ``OTEL_TRACES_EXPORTER`` names an
exporter and the SDK is installed: then a provider is made from the standard
``OTEL_*`` variables, with the SDK's public API only.

Kinds: the controller's span lasts until the result is back, which the
specification calls a CLIENT span (a PRODUCER span may end as soon as its
message is sent); the worker's evaluation is its SERVER span. A cancel is the
caller's own decision, not a failure: its span's status stays unset, and
``pycrew.status`` says ``cancel``. Errors, crashes and timeouts are ERROR.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any

from .._version import __version__

if TYPE_CHECKING:
    from collections.abc import Mapping

    from opentelemetry.trace import Span, SpanContext, Tracer, TracerProvider

log = logging.getLogger("pycrew.tracing")

#: the entry point group where the SDK and exporter packages name their span exporters
EXPORTER_GROUP = "opentelemetry_traces_exporter"
#: how long a worker waits for its spans to go out as it leaves (its exit
#: steps share a 2 s budget with a second thread ending the process)
FLUSH_SECONDS = 1.5
#: statuses whose spans are ERROR
_FAILED = frozenset({"error", "crash", "timeout"})

_LOCK = threading.Lock()
#: the environment was read for a provider once already (its warnings said once)
_ENV_TRIED = False
#: this process's worker-side tracer, once a task brought a context and tracing was on
_SERVING: Tracer | None = None
#: the span contexts of tasks not yet resolved, by (controller, task name), for event links
_OPEN: dict[tuple[str, str], SpanContext] = {}


# ------------------------------------------------------------------ set-up
def tracer() -> Tracer | None:
    """pycrew's tracer, or None where tracing is off (call once per controller start).

    Off when ``opentelemetry`` is not importable, or when no tracer provider
    is configured and the environment does not ask for one.
    """
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    provider = trace.get_tracer_provider()
    if _inert(provider):
        made = _provider_from_environment()
        if made is None:
            return None
        provider = made
    return provider.get_tracer("pycrew", __version__)


def _inert(provider: TracerProvider) -> bool:
    from opentelemetry import trace

    return isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


def _provider_from_environment() -> TracerProvider | None:
    """A global tracer provider made from ``OTEL_*`` variables, if they ask for one.

    Made once per process: a second controller start finds it configured.
    """
    global _ENV_TRIED
    names = [n.strip() for n in os.environ.get("OTEL_TRACES_EXPORTER", "").split(",")]
    names = [n for n in names if n and n.lower() != "none"]
    if not names or os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    with _LOCK:
        from opentelemetry import trace

        current = trace.get_tracer_provider()
        if not _inert(current):
            return current  # another thread got here first
        if _ENV_TRIED:
            return None
        _ENV_TRIED = True
        try:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider as SdkProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError:
            log.warning(
                "OTEL_TRACES_EXPORTER is set, but opentelemetry-sdk is not installed: "
                "pycrew traces nothing"
            )
            return None
        exporters = [e for e in map(_exporter, names) if e is not None]
        if not exporters:
            return None
        # Resource.create() reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES;
        # the provider reads the sampler and span limits from OTEL_* itself
        provider = SdkProvider(resource=Resource.create())
        for exporter in exporters:
            provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        return trace.get_tracer_provider()


def _exporter(name: str) -> Any:
    """The span exporter an installed package registers under ``name``, or None."""
    from importlib.metadata import entry_points

    found = list(entry_points(group=EXPORTER_GROUP, name=name))
    if not found:
        log.warning(
            "OTEL_TRACES_EXPORTER names %r, which no installed package provides "
            "(for 'otlp': pip install opentelemetry-exporter-otlp)",
            name,
        )
        return None
    try:
        return found[0].load()()
    except Exception as exc:
        log.warning("the %r span exporter could not be made: %s", name, exc)
        return None


# ---------------------------------------------------------- controller side
def _client_kind() -> Any:
    global _CLIENT
    if _CLIENT is None:
        from opentelemetry.trace import SpanKind

        _CLIENT = SpanKind.CLIENT
    return _CLIENT


#: ``SpanKind.CLIENT``, once opentelemetry is imported (it is not until tracing is on)
_CLIENT: Any = None


class TaskSpan:
    """A task's span on the controller: started at push, ended once, when the task resolves.

    ``carrier`` is what travels in the task (empty where the span is not
    real: nothing extra is sent then).
    """

    __slots__ = ("carrier", "ended", "function", "key", "span")

    def __init__(self, tracer: Tracer, function: str, name: str, controller: str) -> None:
        # Every microsecond here is paid by every push: the attributes go in
        # with the outcome, in one call (each call cleans and locks), and the
        # context is written as W3C's traceparent directly, not through the
        # propagation API (the worker reads it with W3C's own propagator).
        self.span: Span = tracer.start_span(function, kind=_client_kind())
        self.ended = False
        self.function = function
        self.key = (controller, name)
        context = self.span.get_span_context()
        if context.is_valid and context.trace_flags & 1:
            # sampled: a span not sampled here would not be recorded there either
            self.carrier = {
                "traceparent": f"00-{context.trace_id:032x}-{context.span_id:016x}-"
                f"{context.trace_flags:02x}"
            }
            if context.trace_state:
                self.carrier["tracestate"] = context.trace_state.to_header()
            _OPEN[self.key] = context
        else:
            self.carrier = {}

    def end(
        self,
        status: str,
        error: str | None,
        attempts: int,
        worker: str | None,
        host: str | None = None,
    ) -> None:
        """Close the span with the task's outcome (a second call does nothing)."""
        if self.ended:
            return
        self.ended = True
        _OPEN.pop(self.key, None)
        span = self.span
        controller, name = self.key
        # one call: each takes the span's lock
        attributes: dict[str, Any] = {
            "rpc.system": "pycrew",
            "rpc.method": self.function,
            "pycrew.function": self.function,
            "pycrew.task.name": name,
            "pycrew.controller": controller,
            "pycrew.status": status,
            "pycrew.attempts": attempts,
        }
        if worker is not None:
            attributes["pycrew.worker.id"] = worker
        if host is not None:
            attributes["server.address"] = host
        span.set_attributes(attributes)
        if status in _FAILED:
            _set_status(span, status, error)
        span.end()

    def unsent(self, why: str) -> None:
        """The push failed after the span began: it ends as an error, the task never sent."""
        self.end("error", f"not pushed: {why}", 0, None)


def _set_status(span: Span, status: str, error: str | None) -> None:
    from opentelemetry.trace import Status, StatusCode

    if status in _FAILED:
        # error.type: the exception's class for a raised error, else the status
        kind = status
        if status == "error" and error and ":" in error.split(" ", 1)[0]:
            kind = error.split(":", 1)[0]
        span.set_attribute("error.type", kind)
        span.set_status(Status(StatusCode.ERROR, error or status))


def controller_event(
    tracer: Tracer | None,
    kind: str,
    *,
    name: str,
    url: str = "",
    engine: str = "",
    begun: float | None = None,
) -> None:
    """A short INTERNAL span for a controller's ``start`` or ``terminate``.

    Args:
        tracer: from ``tracer()``; None does nothing.
        kind: ``"start"`` or ``"terminate"``.
        name, url, engine: the controller's.
        begun: when the step began (``time.time()``); now if not given.
    """
    if tracer is None:
        return
    try:
        now = time.time_ns()
        start = now if begun is None else min(now, int(begun * 1e9))
        span = tracer.start_span(
            f"pycrew controller {kind}",
            start_time=start,
            attributes={"pycrew.controller": name, "pycrew.url": url, "pycrew.engine": engine},
        )
        span.end(end_time=now)
    except Exception as exc:  # tracing never breaks a start or a terminate
        log.debug("no %s span: %s", kind, exc)


class EventSpans:
    """A live-state listener: each worker event becomes a short INTERNAL span.

    Register one per controller start (``observed.listen(EventSpans(tracer,
    name))``). Each span is a root of its own, linked to the span of the
    task the event names, where that task is still open: a worker outlives
    many tasks, so it belongs to none of their traces.
    """

    __slots__ = ("controller", "tracer")

    def __init__(self, tracer: Tracer, controller: str) -> None:
        self.tracer = tracer
        self.controller = controller

    def __call__(self, event: Mapping[str, Any]) -> None:
        try:
            self._emit(event)
        except Exception as exc:  # a listener must not break the dispatcher
            log.debug("no span for event %r: %s", event.get("kind"), exc)

    def _emit(self, event: Mapping[str, Any]) -> None:
        from opentelemetry import context as otel_context
        from opentelemetry.trace import Link

        kind = str(event.get("kind"))
        controller = str(event.get("controller") or self.controller)
        attributes: dict[str, Any] = {"pycrew.controller": controller, "pycrew.event": kind}
        for field, key in (
            ("worker", "pycrew.worker.id"),
            ("task", "pycrew.task.name"),
            ("detail", "pycrew.event.detail"),
            ("job", "pycrew.worker.job"),
            ("pid", "pycrew.worker.pid"),
            ("host", "pycrew.worker.host"),
        ):
            value = event.get(field)
            if isinstance(value, (str, int, float, bool)):
                attributes[key] = value
        links = []
        task = event.get("task")
        if task is not None:
            linked = _OPEN.get((controller, str(task)))
            if linked is not None:
                links.append(Link(linked))
        now = time.time_ns()
        when = event.get("time")
        start = min(now, int(when * 1e9)) if isinstance(when, (int, float)) else now
        span = self.tracer.start_span(
            f"pycrew worker {kind}",
            context=otel_context.Context(),  # a root: no task's trace holds a worker
            links=links,
            start_time=start,
            attributes=attributes,
        )
        if kind in ("crash", "retry", "exit", "refused"):
            _set_status(span, "crash", str(event.get("detail") or kind))
        span.end(end_time=max(now, start))


# -------------------------------------------------------------- worker side
class ServedSpan:
    """A task's SERVER span on its worker, current while the task runs."""

    __slots__ = ("span", "token")

    def __init__(
        self, tracer: Tracer, carrier: Mapping[str, str], function: str, name: str
    ) -> None:
        # Every microsecond here is paid by every task: what the span needs of
        # opentelemetry is looked up once per process (_Serving), and the
        # controller's traceparent is read directly, in W3C's format
        use = _use()
        parent = use.parent(carrier)
        attributes: dict[str, Any] = {
            "rpc.method": function,
            "pycrew.function": function,
            "pycrew.task.name": name,
            **use.attributes,
        }
        self.span: Span = tracer.start_span(
            function, context=parent, kind=use.server, attributes=attributes
        )
        # the task's own spans nest under this one
        self.token = use.attach(use.set_span_in_context(self.span, parent))

    def end(self, status: str, error: str | None, trace_text: str | None, attempts: int) -> None:
        try:
            _use().detach(self.token)
        finally:
            span = self.span
            span.set_attributes({"pycrew.status": status, "pycrew.attempts": attempts})
            if status == "error" and error:
                kind, _, message = error.partition(": ")
                event = {"exception.type": kind, "exception.message": message or kind}
                if trace_text:
                    event["exception.stacktrace"] = trace_text
                span.add_event("exception", event)
            if status in _FAILED:
                _set_status(span, status, error)
            span.end()


class _Serving:
    """What a worker's spans need of opentelemetry, looked up once per process."""

    def __init__(self) -> None:
        from opentelemetry import context as otel_context
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        from .._wire._frames import WORKER_ENV

        self.trace = trace
        self.server = trace.SpanKind.SERVER
        self.attach = otel_context.attach
        self.detach = otel_context.detach
        self.set_span_in_context = trace.set_span_in_context
        self.propagator = TraceContextTextMapPropagator()
        self.attributes: dict[str, Any] = {
            "rpc.system": "pycrew",
            "pycrew.worker.id": os.environ.get(WORKER_ENV, ""),
            "process.pid": os.getpid(),
        }

    def parent(self, carrier: Mapping[str, str]) -> Any:
        """The controller's span as the parent context: a plain traceparent is read
        here; anything else (a tracestate, another version) by W3C's propagator."""
        header = carrier.get("traceparent", "")
        parts = header.split("-")
        if (
            "tracestate" not in carrier
            and len(parts) == 4
            and parts[0] == "00"
            and len(parts[1]) == 32
            and len(parts[2]) == 16
            and len(parts[3]) == 2
        ):
            try:
                trace_id, span_id = int(parts[1], 16), int(parts[2], 16)
                flags = int(parts[3], 16)
            except ValueError:
                pass
            else:
                if trace_id and span_id:
                    trace = self.trace
                    context = trace.SpanContext(
                        trace_id, span_id, is_remote=True, trace_flags=trace.TraceFlags(flags)
                    )
                    return trace.set_span_in_context(trace.NonRecordingSpan(context))
        return self.propagator.extract(carrier)


_USE: _Serving | None = None


def _use() -> _Serving:
    global _USE
    if _USE is None:
        _USE = _Serving()
    return _USE


def serve(carrier: Mapping[str, str], function: str, name: str) -> ServedSpan | None:
    """On a worker: the span of a task that brought a trace context, or None if tracing is off.

    Off until this process has a tracer provider (set up by an initializer,
    an ``everywhere()`` call, or ``OTEL_*`` variables): asked again at each
    task until then, so a provider a set-up step made is found.
    """
    global _SERVING
    served = _SERVING
    if served is None:
        served = tracer()
        if served is None:
            return None
        _SERVING = served
    return ServedSpan(served, carrier, function, name)


def flush(seconds: float = FLUSH_SECONDS) -> None:
    """A worker about to leave (by ``os._exit``, which skips atexit): send buffered spans."""
    if _SERVING is None:
        return
    from opentelemetry import trace

    force_flush = getattr(trace.get_tracer_provider(), "force_flush", None)
    if force_flush is not None:
        force_flush(int(seconds * 1000))
