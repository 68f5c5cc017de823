"""``ControllerGroup``: several controllers (pools of differently sized workers) used as one.

```
 push/walk/map(controller="big") ──► that member (default: the first, or with
                                     resources=, the first that can have them)
 wait/pop/collect/summary/...(controllers=[...]) ──► each selected member, in order
 member dispatchers ── at each resolution ──► group condition ──► a waiting wait() wakes
```

A group's ``wait()`` sleeps on one condition that every member's dispatcher
pokes when a task resolves, so it wakes at once without polling the members.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, Literal

from .._errors import ArgumentError, ArgumentTypeError
from ._checks import check_cursor, check_error, check_seconds
from ._controller import Controller
from ._records import ErrorMode, quietly, warn_cancelled
from ._shapes import route
from ._watch import GroupCursors, merge_status, serve_dashboard

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from types import TracebackType

    from .._operations._dashboard._server import Dashboard
    from .._results import Summary, TaskResult, WorkerSummary
    from ._futures import TaskFuture
    from ._records import ErrorMode


class ControllerGroup:
    """Controllers used as one: route pushes to a member, collect from all.

    Args:
        *controllers: the members, not started yet, with distinct names. The
            first is where ``push``, ``walk`` and ``map`` go by default.

    Every method takes the same arguments as a controller's, plus
    ``controller="name"`` (one member) for ``push``, ``walk``, ``map`` and
    ``saturated``, or ``controllers=["a", "b"]`` (a subset; default all) for
    the rest. Put every controller of a backup chain in one group and collect
    through the group, so records are found wherever they ran.
    """

    def __init__(self, *controllers: Controller) -> None:
        if not controllers:
            raise ArgumentError("a ControllerGroup needs at least one controller")
        seen: set[str] = set()
        for member in controllers:
            if not isinstance(member, Controller):
                raise ArgumentTypeError(f"group members must be pycrew controllers, not {member!r}")
            if member.name in seen:
                raise ArgumentError(
                    f"two group members are named {member.name!r}: names must differ"
                )
            if member.started():
                raise ArgumentError(
                    f"controller {member.name!r} is already started: add controllers to a "
                    "group before starting them"
                )
            seen.add(member.name)
        self.controllers: dict[str, Controller] = {c.name: c for c in controllers}
        self._cursors = GroupCursors()
        self._cv = threading.Condition()
        self._resolutions = 0
        for member in controllers:
            member._listeners.append(self._poke)

    def _poke(self) -> None:
        # called by a member's dispatcher, under its lock: only this quick
        # condition is taken here, and never while holding a dispatcher's lock
        with self._cv:
            self._resolutions += 1
            self._cv.notify_all()

    def __repr__(self) -> str:
        return f"<ControllerGroup {list(self.controllers)}>"

    def __enter__(self) -> ControllerGroup:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.terminate()
            return
        with quietly():  # the exception says enough: the block did not finish
            self.terminate()

    # ------------------------------------------------------------ members
    def _one(self, controller: str | None) -> Controller:
        if controller is None:
            return next(iter(self.controllers.values()))
        member = self.controllers.get(controller)
        if member is None:
            raise ArgumentError(
                f"controller {controller!r} is not in this group: {list(self.controllers)}"
            )
        return member

    def _route(self, controller: str | None, fn: Any, kwargs: dict[str, Any]) -> Controller:
        if controller is not None:
            return self._one(controller)
        return route(list(self.controllers.values()), fn, kwargs.get("resources"))

    def _some(self, controllers: Iterable[str] | str | None) -> list[Controller]:
        if controllers is None:
            return list(self.controllers.values())
        names = [controllers] if isinstance(controllers, str) else list(controllers)
        if not names:
            raise ArgumentError("controllers must name at least one member (or be None for all)")
        unknown = [n for n in names if n not in self.controllers]
        if unknown:
            raise ArgumentError(
                f"controllers not found: {unknown}; members: {list(self.controllers)}"
            )
        return [self.controllers[n] for n in names]

    # ------------------------------------------------------------- routed
    def push(
        self,
        fn: Callable[..., Any] | str,
        /,
        *args: Any,
        controller: str | None = None,
        **kwargs: Any,
    ) -> TaskFuture[Any]:
        """``push()`` on one member (default: the first, or the first that can have
        the task's ``resources=``)."""
        return self._route(controller, fn, kwargs).push(fn, *args, **kwargs)

    def walk(
        self,
        fn: Callable[..., Any] | str,
        /,
        *args: Any,
        controller: str | None = None,
        **kwargs: Any,
    ) -> list[TaskFuture[Any]]:
        """``walk()`` on one member (default: as for ``push``)."""
        return self._route(controller, fn, kwargs).walk(fn, *args, **kwargs)

    def map(
        self,
        fn: Callable[..., Any] | str,
        /,
        *args: Any,
        controller: str | None = None,
        **kwargs: Any,
    ) -> list[TaskResult]:
        """``map()`` on one member (default: as for ``push``)."""
        return self._route(controller, fn, kwargs).map(fn, *args, **kwargs)

    def saturated(self, controller: str | None = None) -> bool:
        return self._one(controller).saturated()

    # ---------------------------------------------------------- aggregate
    def start(self, controllers: Iterable[str] | str | None = None) -> None:
        for member in self._some(controllers):
            member.start()

    def terminate(self, controllers: Iterable[str] | str | None = None) -> None:
        """Terminate each selected member; one ``CrewWarning`` names the unfinished
        tasks this cancelled, in them all (see ``Controller.terminate``)."""
        with quietly() as cancelled:
            for member in self._some(controllers):
                member.terminate()
        warn_cancelled("ControllerGroup.terminate()", cancelled)

    def started(self, controllers: Iterable[str] | str | None = None) -> bool:
        return all(m.started() for m in self._some(controllers))

    def launch(self, n: int = 1, controllers: Iterable[str] | str | None = None) -> None:
        """``launch(n)`` on each selected member."""
        for member in self._some(controllers):
            member.launch(n)

    def scale(self, controllers: Iterable[str] | str | None = None) -> bool:
        """One scaling round in each selected member; whether any launched."""
        launched = [m.scale() for m in self._some(controllers)]  # every member, no short cut
        return any(launched)

    def wait(
        self,
        mode: Literal["all", "one"] = "all",
        seconds_timeout: float | None = None,
        controllers: Iterable[str] | str | None = None,
    ) -> bool:
        """Block until every selected member's tasks are resolved, or one can be popped.

        Returns whether the condition holds; a timeout returns ``False``.
        """
        if mode not in ("all", "one"):
            raise ArgumentError(f"mode must be 'all' or 'one', got {mode!r}")
        if seconds_timeout is not None:
            check_seconds("seconds_timeout", seconds_timeout)
        members = self._some(controllers)
        if all(m.size() == 0 for m in members):
            return mode == "all"  # nothing to wait for, as with one controller (crew's rule)
        deadline = None if seconds_timeout is None else time.monotonic() + seconds_timeout
        interval = min(m.seconds_interval for m in members)
        while True:
            with self._cv:
                seen = self._resolutions
            # checked without the group's condition held: member checks take
            # their dispatchers' locks, which the poke takes the other way round
            if mode == "all" and all(m.wait("all", seconds_timeout=0) for m in members):
                return True
            if mode == "one" and any(m.wait("one", seconds_timeout=0) for m in members):
                return True
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            with self._cv:
                if self._resolutions == seen:
                    # the interval bounds the sleep so launch errors still surface
                    self._cv.wait(interval if left is None else min(left, interval))

    def pop(
        self, error: ErrorMode | None = None, controllers: Iterable[str] | str | None = None
    ) -> TaskResult | None:
        """The first record any selected member has, trying them in order."""
        check_error(error)
        for member in self._some(controllers):
            record = member.pop(error=error)
            if record is not None:
                return record
        return None

    def collect(
        self, error: ErrorMode | None = None, controllers: Iterable[str] | str | None = None
    ) -> list[TaskResult]:
        """Every resolved record of the selected members, member by member."""
        check_error(error)
        records: list[TaskResult] = []
        for member in self._some(controllers):
            records += member.collect(error=error)
        return records

    def cancel(
        self,
        names: str | Iterable[str] | None = None,
        all: bool = False,
        controllers: Iterable[str] | str | None = None,
    ) -> None:
        """Cancel tasks by name (wherever they are) or all of them, in the selected members."""
        wanted = [names] if isinstance(names, str) else names
        for member in self._some(controllers):
            if all:
                member.cancel(all=True)
            elif wanted is not None:
                member.cancel([n for n in wanted if n in member._records.tasks])
            else:
                raise ArgumentError("give names to cancel, or all=True")

    def summary(
        self,
        by: Literal["controller", "worker"] = "controller",
        controllers: Iterable[str] | str | None = None,
    ) -> list[Summary] | list[WorkerSummary] | None:
        """Each selected member's summary (``None`` if none has one), or all worker rows."""
        members = self._some(controllers)
        if by == "worker":
            return [row for m in members for row in m.summary(by="worker")]
        rows = [s for s in (m.summary() for m in members) if s is not None]
        return rows or None

    def pids(self, controllers: Iterable[str] | str | None = None) -> list[int]:
        return sorted(p for m in self._some(controllers) for p in m.pids())

    def size(self, controllers: Iterable[str] | str | None = None) -> int:
        return sum(m.size() for m in self._some(controllers))

    def resolved(self, controllers: Iterable[str] | str | None = None) -> int:
        return sum(m.resolved() for m in self._some(controllers))

    def unresolved(self, controllers: Iterable[str] | str | None = None) -> int:
        return sum(m.unresolved() for m in self._some(controllers))

    def empty(self, controllers: Iterable[str] | str | None = None) -> bool:
        return all(m.empty() for m in self._some(controllers))

    def nonempty(self, controllers: Iterable[str] | str | None = None) -> bool:
        return any(m.nonempty() for m in self._some(controllers))

    def crashes(self, name: str, controllers: Iterable[str] | str | None = None) -> int:
        """Consecutive crashes of task ``name``, summed over the selected members."""
        return sum(m.crashes(name) for m in self._some(controllers))

    def workers_status(
        self, controllers: Iterable[str] | str | None = None
    ) -> dict[str, dict[str, int]]:
        return {m.name: m.workers_status() for m in self._some(controllers)}

    # ------------------------------------------------------------- watching
    def status(self, since: int = 0, limit: int | None = None) -> dict[str, Any]:
        """The members' live states as one (``Controller.status``): counts summed,
        rows, streams and events merged, each tagged with its ``controller``."""
        check_cursor(since, limit)
        behind = self._cursors.members_since(since)
        states = [m.status(behind.get(m.name, 0), limit) for m in self.controllers.values()]
        return merge_status(states, self._cursors.issue(states), limit)

    def worker_log(self, worker_id: str, lines: int = 200) -> str | None:
        """The end of a member's worker's log (``Controller.worker_log``)."""
        for member in self.controllers.values():
            if worker_id.startswith(f"{member.name}-"):
                return member.worker_log(worker_id, lines)
        return None

    def dashboard(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        allow_cancel: bool = False,
        allow_public: bool = False,
    ) -> Dashboard:
        """A live web page of the whole group (``Controller.dashboard``)."""
        title = " + ".join(self.controllers)
        return serve_dashboard(self, host, port, allow_cancel, allow_public, title)
