"""asyncio glue: waits that never block the event loop.

```
 dispatcher thread: future settles ─► done callback ─► loop.call_soon_threadsafe(...)
 event loop: await map_async(...) / async for as_completed(...) ◄── woken, never polled
```

Futures are ``concurrent.futures.Future`` objects, so ``await fut`` goes
through ``asyncio.wrap_future``; here is what waits on many at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from typing import TYPE_CHECKING, Any, TypeVar

from .._dispatcher._task import DONE
from .._errors import ArgumentError, CrewTimeoutError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable, Iterator

    from ._controller import Controller
    from ._futures import TaskFuture

T = TypeVar("T")


async def wait_futures(controller: Controller, futures: list[TaskFuture[Any]], fast: bool) -> None:
    """Wait until every future is done, or (``fast``) one failed, without blocking the loop.

    The controller's failures (a launcher that cannot start workers, say)
    are checked every ``seconds_interval`` so that they surface here too.
    """
    loop = asyncio.get_running_loop()
    woken = asyncio.Event()
    left = [len(futures)]

    def ended(future: Any) -> None:
        left[0] -= 1
        task = future._where[1]
        failed = task.state == DONE and (task.outcome is not None or task.failed)
        if left[0] <= 0 or (fast and failed):
            woken.set()

    def arrived(future: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(ended, future)

    for future in futures:
        future.add_done_callback(arrived)
    while not woken.is_set():
        controller._raise_failure()
        try:
            await asyncio.wait_for(woken.wait(), controller.seconds_interval)
        except asyncio.TimeoutError:
            continue


# --------------------------------------------------------- as_completed
class _Completed:
    """What ``as_completed`` returns: a plain and an async iterator."""

    def __init__(
        self, futures: Iterable[concurrent.futures.Future[Any]], timeout: float | None
    ) -> None:
        self._futures = list(dict.fromkeys(futures))
        self._timeout = timeout

    def __iter__(self) -> Iterator[concurrent.futures.Future[Any]]:
        try:
            yield from concurrent.futures.as_completed(self._futures, timeout=self._timeout)
        except concurrent.futures.TimeoutError as exc:
            raise CrewTimeoutError(str(exc)) from None

    async def _stream(self) -> AsyncIterator[concurrent.futures.Future[Any]]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[concurrent.futures.Future[Any]] = asyncio.Queue()

        def arrived(fut: concurrent.futures.Future[Any]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens
                loop.call_soon_threadsafe(queue.put_nowait, fut)

        for fut in self._futures:
            fut.add_done_callback(arrived)
        deadline = None if self._timeout is None else loop.time() + self._timeout
        for _ in range(len(self._futures)):
            left = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                yield await asyncio.wait_for(queue.get(), left)
            except asyncio.TimeoutError:
                raise CrewTimeoutError(
                    f"{queue.qsize()} of the futures were not done after {self._timeout} s"
                ) from None

    def __aiter__(self) -> AsyncIterator[concurrent.futures.Future[Any]]:
        return self._stream()


def as_completed(
    futures: Iterable[concurrent.futures.Future[T]],
    timeout: float | None = None,
    progress: bool = False,
) -> Any:
    """Futures as they finish: ``for fut in as_completed(fs)`` or ``async for``.

    Args:
        futures: pycrew futures (any ``concurrent.futures.Future`` works).
        timeout: the most seconds to wait in all; then ``CrewTimeoutError``
            (a ``TimeoutError``).
        progress: show a progress bar while iterating.

    The async form never blocks the event loop: futures arrive through
    their done callbacks.
    """
    futures = list(futures)
    if timeout is not None and (isinstance(timeout, bool) or not timeout >= 0):
        raise ArgumentError(f"timeout must be None or a number >= 0, got {timeout!r}")
    completed = _Completed(futures, timeout)
    return _Progressed(completed, len(futures)) if progress else completed


class _Progressed:
    """``as_completed`` with a progress bar that advances as futures arrive."""

    def __init__(self, inner: _Completed, total: int) -> None:
        self._inner = inner
        self._total = total

    def __iter__(self) -> Iterator[concurrent.futures.Future[Any]]:
        from .._operations._progress import progress_bar

        bar = progress_bar(self._total)
        try:
            for done, fut in enumerate(self._inner, 1):
                bar(done)
                yield fut
        finally:
            bar(None)

    async def _stream(self) -> AsyncIterator[concurrent.futures.Future[Any]]:
        from .._operations._progress import progress_bar

        bar = progress_bar(self._total)
        try:
            done = 0
            async for fut in self._inner:
                done += 1
                bar(done)
                yield fut
        finally:
            bar(None)

    def __aiter__(self) -> AsyncIterator[concurrent.futures.Future[Any]]:
        return self._stream()
