"""What every worker gets besides its tasks: settings, environment, setup steps
and shared objects.

```
 Controller(initializer=, serializers=) ─► SETUP frames, pickled once ─┐
 ctl.everywhere(fn, *args) ─────────────► SETUP frame ────────────────┼─► Dispatcher.add_setup:
                                                                      │   every connected worker
                                                                      │   now, each new one first
 ctl.share(obj) ─► SHARE frame, pickled once ─► Dispatcher.add_share ─┘
      └─► Shared handle ─ in a task's args ─► Task.shared keys ─► sent once per worker,
                                                                  before the first such task
```

On a worker (``_setup``) a step runs before the next task and a handle
unpickles as the object, kept there until ``drop()``.
"""

from __future__ import annotations

import itertools
import math
import os
import sys
import threading
import weakref
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .._engines._launcher import WorkerSpec
from .._errors import ArgumentError, ArgumentTypeError
from .._wire import _frames, _pickling
from .._wire._frames import Kind
from .._worker import _setup
from ._checks import blame

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from .._dispatcher._dispatcher import Dispatcher
    from .._wire._tls import TlsSession
    from ._controller import Controller

T = TypeVar("T")
#: keys are unique in this process: a sequential controller keeps its shared
#: objects where a worker does, beside any other controller's
KEYS = itertools.count(1)
_COLLECTING = threading.local()


class Shared(Generic[T]):
    """A handle to an object sent to each worker once (see ``Controller.share``).

    Pass it to tasks in place of the object, as an argument, in ``data=``
    or ``globals=``, at any depth: on the worker it is the object itself.
    """

    __slots__ = ("__weakref__", "_controller", "_session", "key", "name", "nbytes")

    def __init__(self, controller: Controller, key: int, name: str, nbytes: int) -> None:
        self._controller = weakref.ref(controller)
        self._session = controller.session
        #: unique in this process
        self.key = key
        #: the name given to ``Controller.share``, for messages
        self.name = name
        #: the size of the object as it travels (its pickle and buffers)
        self.nbytes = nbytes

    def __repr__(self) -> str:
        state = "live" if self.live() else "dropped"
        return f"<Shared {self.name!r} {state} {self.nbytes} bytes>"

    def __reduce__(self) -> tuple[Any, ...]:
        collect(self)
        return _setup.shared_value, (self.key, self.name)

    def live(self) -> bool:
        """Whether tasks may still use it: not dropped, and its controller not restarted."""
        controller = self._controller()
        if controller is None or controller.session != self._session:
            return False
        dispatcher = controller._dispatcher
        return dispatcher is not None and self.key in dispatcher.shares

    def drop(self) -> None:
        """Free the object here and on every worker; tasks may not use it after."""
        controller = self._controller()
        dispatcher = controller._dispatcher if controller is not None else None
        if (
            dispatcher is not None
            and controller is not None
            and controller.session == self._session
        ):
            dispatcher.remove_share(self.key)


def collect(handle: Shared[Any]) -> None:
    """Note a handle met while a task is pickled (``dumps_task``)."""
    keys = getattr(_COLLECTING, "keys", None)
    if keys is not None:
        keys.append(handle)


def share(controller: Controller, obj: T, name: str | None) -> Shared[T]:
    controller.start()
    controller._raise_failure()
    key = next(KEYS)
    if name is None:
        name = f"shared_{key}"
    elif not isinstance(name, str) or not name:
        raise ArgumentError(f"name must be a non-empty string, got {name!r}")
    nbytes = publish(controller, key, obj, f"shared object {name!r}")
    return Shared(controller, key, name, nbytes)


def publish(controller: Controller, key: int, obj: Any, what: str) -> int:
    """Pickle ``obj`` once, as the shared object ``key`` that each worker gets
    before its first task that names it; the bytes it travels as."""
    try:
        body, buffers = _pickling.dumps(obj, controller._serializers)
    except Exception as exc:
        raise ArgumentTypeError(f"{what} cannot be pickled: {exc}") from exc
    meta = _frames.SHARE_KEY.pack(key) + body
    problem = _frames.too_large(len(meta), buffers, controller.bytes_max)
    if problem is not None:
        raise ArgumentError(f"{what} is {problem}: raise bytes_max")
    controller._running().add_share(key, _frames.encode(Kind.SHARE, meta, buffers))
    return len(meta) + sum(b.nbytes for b in buffers)


def dumps_task(
    controller: Controller, name: str, payload: Any
) -> tuple[bytes, Any, tuple[int, ...], list[Any]]:
    """A task's pickle and buffers, the keys of the shared objects it uses, and the
    futures whose results it takes (by slot: see ``_graph.reduce_future``).

    Raises:
        ArgumentError: it uses a shared object dropped, or of another controller.
    """
    used: list[Shared[Any]] = []
    futures: dict[int, tuple[int, Any]] = {}
    _COLLECTING.keys = used
    _COLLECTING.futures = futures
    try:
        body, buffers = _pickling.dumps(payload, controller._serializers)
    finally:
        _COLLECTING.keys = None
        _COLLECTING.futures = None
    inputs = [future for _, future in futures.values()]
    if not used:
        return body, buffers, (), inputs
    for handle in used:
        if handle._controller() is not controller:
            raise ArgumentError(
                f"task {name!r} uses shared object {handle.name!r} of another controller"
            )
        if not handle.live():
            raise ArgumentError(f"task {name!r} uses shared object {handle.name!r}, dropped")
    return body, buffers, tuple(dict.fromkeys(h.key for h in used)), inputs


def input_slot(future: Any) -> int | None:
    """The slot of a future met while a task is pickled, or None outside a task's pickle."""
    futures: dict[int, tuple[int, Any]] | None = getattr(_COLLECTING, "futures", None)
    if futures is None:
        return None
    return futures.setdefault(id(future), (len(futures), future))[0]


def worker_settings(ctl: Controller) -> dict[str, Any]:
    """The settings a worker gets in WELCOME (JSON)."""
    return {
        "seconds_idle": None if math.isinf(ctl.seconds_idle) else ctl.seconds_idle,
        "seconds_wall": None if math.isinf(ctl.seconds_wall) else ctl.seconds_wall,
        "tasks_max": None if math.isinf(ctl.tasks_max) else int(ctl.tasks_max),
        "tasks_timers": ctl.tasks_timers,
        "seconds_heartbeat": ctl.seconds_heartbeat,
        "reset_globals": ctl.reset_globals,
        "reset_modules": ctl.reset_modules,
        "garbage_collection": ctl.garbage_collection,
        "reset_environment": ctl.reset_environment,
        "bytes_max": ctl.bytes_max,
        "metrics": ctl.metrics.settings() if ctl.metrics else None,
        "relay_output": ctl.relay_output,
        "seconds_drain": ctl.seconds_drain,
    }


def worker_spec(ctl: Controller, address: str, env: dict[str, str]) -> WorkerSpec:
    """The spec of one new worker of ``ctl``: its command line, id and environment."""
    worker_id = f"{ctl.name}-{next(ctl._worker_numbers)}"
    command = [sys.executable, "-m", "pycrew", "worker", "--address", address]
    command += ["--id", worker_id]
    if ctl.tls.enabled:
        command.append("--tls")
    hidden = frozenset([ctl.tls.password_env] if ctl.tls.password_env else [])
    return WorkerSpec(
        command=command,
        env={**env, _frames.WORKER_ENV: worker_id},
        worker_id=worker_id,
        controller=ctl.name,
        env_remove=hidden,
    )


def record_launches(ctl: Controller, specs: list[WorkerSpec], handles: list[Any]) -> None:
    """Record launched workers where monitors look for leftovers (scaler thread)."""
    from .._operations import _ledger

    launcher = ctl.launcher
    rows = [
        {"worker": spec.worker_id, **launcher.describe_worker(handle)}
        for spec, handle in zip(specs, handles, strict=True)
    ]
    _ledger.record_launches(ctl.name, ctl.session, rows)
    dispatcher = ctl._dispatcher
    if dispatcher is not None:
        for row in rows:
            dispatcher.observed.launch(row["worker"], row)


def worker_env(ctl: Controller, secret: bytes, session: TlsSession | None) -> dict[str, str]:
    """What every worker of one start gets in its environment, the secret included."""
    env = {**ctl.env, _frames.SECRET_ENV: secret.hex(), _frames.CONTROLLER_ENV: ctl.name}
    # where this process imports from (its script's folder, its working
    # directory, PYTHONPATH): workers add what exists on their host
    env[_frames.PATH_ENV] = os.pathsep.join(_pickling.import_paths())
    if session is not None:
        env[_frames.TRUST_ENV] = session.trust_pem
        if session.server_name is not None:
            env[_frames.TLS_NAME_ENV] = session.server_name
    return env


def setup_frames(
    serializers: _pickling.Serializers | None,
    initializer: Callable[..., object] | None,
    initargs: tuple[Any, ...],
) -> list[tuple[Any, ...]]:
    """The steps every worker runs before its first task: serializers, then the initializer."""
    frames = []
    if serializers is not None:
        frames.append(setup_frame(("serializers", serializers.table), None))
    if initializer is not None:
        step = call_step(initializer, initargs, {}, "initializer")
        frames.append(setup_frame(step, serializers))
    return frames


def setup_frame(
    payload: tuple[Any, ...], serializers: _pickling.Serializers | None
) -> tuple[Any, ...]:
    """A SETUP frame: a step every worker runs before its next task."""
    try:
        body, buffers = _pickling.dumps(payload, serializers)
    except Exception as exc:
        # blame() reads a task's payload: the step's function and arguments are one
        why = blame((0, *payload[1:], {}, {}), exc) if payload[0] == "call" else exc
        raise ArgumentTypeError(f"the setup step cannot be pickled: {why}") from exc
    return _frames.encode(Kind.SETUP, body, buffers)


def call_step(
    fn: Callable[..., object], args: tuple[Any, ...], kwargs: Mapping[str, Any], label: str
) -> tuple[Any, ...]:
    if not callable(fn):
        raise ArgumentTypeError(f"{label} must be callable, got {fn!r}")
    if not isinstance(args, tuple):
        raise ArgumentTypeError(f"the arguments of {label} must be a tuple, got {args!r}")
    return ("call", fn, args, dict(kwargs))


def check_serializers(
    serializers: Mapping[type, tuple[Callable[[Any], Any], Callable[[Any], Any]]] | None,
) -> _pickling.Serializers | None:
    """The ``serializers=`` option, checked: ``{type: (dumps, loads)}``."""
    if serializers is None:
        return None
    if not hasattr(serializers, "items"):
        raise ArgumentTypeError("serializers must be a dict of {type: (dumps, loads)}")
    table: dict[type, tuple[Any, Any]] = {}
    for cls, pair in serializers.items():
        if not isinstance(cls, type):
            raise ArgumentTypeError(f"serializers: a key must be a type, got {cls!r}")
        if not isinstance(pair, tuple) or len(pair) != 2 or not all(callable(f) for f in pair):
            raise ArgumentTypeError(
                f"serializers[{cls.__qualname__}] must be a (dumps, loads) pair of callables"
            )
        table[cls] = pair
    return _pickling.Serializers(table) if table else None


class Provisioning:
    """What every worker gets before tasks: set-up steps and shared objects
    (the controller's ``everywhere`` and ``share``)."""

    _serializers: _pickling.Serializers | None

    def start(self) -> None:
        raise NotImplementedError

    def _raise_failure(self) -> None:
        raise NotImplementedError

    def _running(self) -> Dispatcher:
        raise NotImplementedError

    def everywhere(self, fn: Callable[..., object], /, *args: Any, **kwargs: Any) -> None:
        """Run ``fn(*args, **kwargs)`` on every worker: those connected now (before
        their next task) and each that connects later, until ``terminate()``.

        What ``fn`` sets as globals (``global model; model = load()``) is
        there for every task on that worker, whatever ``reset_globals`` says.
        A step that raises on a worker stops the controller: its unfinished
        tasks end as ``cancel`` and later calls raise ``LaunchError``.
        """
        step = call_step(fn, args, kwargs, "everywhere()'s function")
        frame = setup_frame(step, self._serializers)
        self.start()
        self._raise_failure()
        self._running().add_setup(frame)
        self._raise_failure()  # a sequential controller ran it already

    def share(self, obj: T, /, name: str | None = None) -> Shared[T]:
        """Send ``obj`` to each worker once, not with every task that uses it.

        Returns a handle to pass to tasks in place of ``obj`` (as an argument,
        in ``data=`` or ``globals=``, at any depth); on the worker it is the
        object itself, unpickled once and kept (large arrays out of band,
        uncopied). ``handle.drop()`` frees it everywhere; ``terminate()``
        drops them all.
        """
        return share(self, obj, name)  # type: ignore[arg-type]
