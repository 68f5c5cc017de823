"""``local_controller()``: a controller whose workers are subprocesses of this machine."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ._controller import Controller
from .launchers import LocalLauncher

if TYPE_CHECKING:
    import os
    from collections.abc import Callable, Mapping
    from typing import Any

    from ._metrics import Metrics
    from ._tls import TLS


def local_controller(
    name: str | None = None,
    workers: int = 1,
    host: str = "127.0.0.1",
    port: int = 0,
    tls: TLS | str | None = None,
    seconds_interval: float = 0.25,
    seconds_timeout: float = 60,
    seconds_launch: float = 30,
    seconds_idle: float = 300,
    seconds_wall: float = math.inf,
    seconds_heartbeat: float = 10,
    tasks_max: float = math.inf,
    tasks_timers: int = 0,
    reset_globals: bool = True,
    reset_modules: bool = False,
    garbage_collection: bool = False,
    reset_environment: bool = False,
    crashes_max: int = 5,
    log_directory: str | os.PathLike[str] | None = None,
    log_join: bool = True,
    log_bytes_max: int | None = 100 << 20,
    python: str | os.PathLike[str] | None = None,
    seed: int | None = None,
    allow_public: bool = False,
    bytes_max: int = 4 << 30,
    metrics: Metrics | None = None,
    backup: Controller | None = None,
    retry_crashes: bool = False,
    env: Mapping[str, str] | None = None,
    retries: int = 0,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    initializer: Callable[..., object] | None = None,
    initargs: tuple[Any, ...] = (),
    serializers: Mapping[type, tuple[Callable[[Any], Any], Callable[[Any], Any]]] | None = None,
    relay_output: bool = True,
) -> Controller:
    """A controller whose workers are subprocesses of this machine.

    Args:
        name: the controller's name (default: 8 random hex characters).
        workers: the most workers auto-scaling keeps at once.
        host: the address to listen on; workers dial it.
        port: the port to listen on; 0 lets the OS pick a free one.
        tls: ``None``/``"none"``, ``"automatic"``, or a :class:`pycrew.TLS`.
        seconds_interval: the longest pause between scaling rounds and waits.
        seconds_timeout: bound for the controller's own blocking steps (launches).
        seconds_launch: a launched worker that has not connected by then is
            counted as failed and replaced.
        seconds_idle: a worker with no task for this long exits.
        seconds_wall: a worker exits after its current task once this much
            time has passed since it connected.
        seconds_heartbeat: how long a silent peer is given: a worker or
            controller whose host vanished with data in flight is given up
            after this long, and a worker stopped (SIGSTOP) this long is ended.
        tasks_max: a worker exits after this many tasks (1: one task per process).
        tasks_timers: the idle and wall timers start only after this many tasks.
        reset_globals: remove globals a task added to the worker's ``__main__``.
        reset_modules: unload modules a task imported.
        garbage_collection: run ``gc.collect()`` after each task.
        reset_environment: after each task, go back to the working directory,
            environment variables and ``sys.path`` the worker had before it.
        crashes_max: how many consecutive crashes of one task name are
            returned as records before pop/collect/map raise
            :class:`CrashLimitError`.
        log_directory: one log file per worker here (task output included),
            or ``None`` to discard worker output. Either way, a worker that
            exits before it connects is explained: its stderr (kept in a
            small temporary file until it connects, without a log folder)
            is read, and a ``LaunchError`` names the probable cause.
        log_join: stdout and stderr in one file (``True``) or two.
        log_bytes_max: a worker's log file that passes this many bytes moves
            to ``<file>.1`` and starts afresh (at most two parts are kept);
            ``None``: no cap.
        seed: with a seed, every task gets a seed derived from it and the task
            name, so a rerun reproduces its random numbers on any worker.
        allow_public: allow a public or wildcard ``host``.
        bytes_max: the largest task (with its data) or result, in bytes. A
            larger push raises ``ValueError``, a larger result becomes an
            ``error`` record, and a worker that sends more anyway is cut off
            before any memory is set aside for it.
        metrics: a :class:`pycrew.Metrics` to have every worker sample its own
            CPU and memory use.
        backup: a controller that takes a task name once it has crashed
            ``crashes_max`` times in a row here (one with more memory, say);
            it applies the same rule to its own backup.
        python: the Python interpreter workers run (default: this one); it
            must have pycrew installed, in the same version.
        env: environment variables every worker gets, on top of this
            process's (names starting with ``PYCREW_`` are pycrew's own).
        retries, retry_on: a task that raises one of ``retry_on`` runs again
            on its worker, up to ``retries`` more times (each push or map
            may say otherwise); attempt n is reseeded from the task's seed
            and n, and the record counts the attempts.
        initializer, initargs: ``initializer(*initargs)`` runs once on every
            worker before its first task; what it sets as globals stays for
            every task there. If it raises, the controller stops: unfinished
            tasks end as ``cancel`` and later calls raise ``LaunchError``.
        serializers: ``{type: (dumps, loads)}``: objects of exactly that type,
            anywhere in a task's arguments or result, travel as
            ``dumps(obj)`` (bytes or a buffer, large ones uncopied) and come
            back as ``loads(buffer)``.
        relay_output: print what tasks print (``print()``, ``sys.stdout``
            and ``sys.stderr``) here too, each line after ``[task name]``.
        retry_crashes: run a task that crashed its worker again by itself:
            ``crashes_max`` attempts here (at least one), then down the
            ``backup`` chain, until it succeeds or the chain ends. The record
            says how many attempts it took (``attempts``) and where it ran.
    """
    return Controller(
        LocalLauncher(
            log_directory=log_directory,
            log_join=log_join,
            log_bytes_max=log_bytes_max,
            python=python,
        ),
        name=name,
        workers=workers,
        host=host,
        port=port,
        tls=tls,
        seconds_interval=seconds_interval,
        seconds_timeout=seconds_timeout,
        seconds_launch=seconds_launch,
        seconds_idle=seconds_idle,
        seconds_wall=seconds_wall,
        seconds_heartbeat=seconds_heartbeat,
        tasks_max=tasks_max,
        tasks_timers=tasks_timers,
        reset_globals=reset_globals,
        reset_modules=reset_modules,
        garbage_collection=garbage_collection,
        reset_environment=reset_environment,
        crashes_max=crashes_max,
        seed=seed,
        allow_public=allow_public,
        bytes_max=bytes_max,
        metrics=metrics,
        backup=backup,
        retry_crashes=retry_crashes,
        env=env,
        retries=retries,
        retry_on=retry_on,
        initializer=initializer,
        initargs=initargs,
        serializers=serializers,
        relay_output=relay_output,
    )
