"""The ``*_controller()`` factories: one engine's launcher, with that engine's defaults.

```
 local_controller(...)  ─► LocalLauncher(...)  ─► Controller(launcher, host=127.0.0.1, ...)
 slurm_controller(...)  ─► SlurmLauncher(...)  ─┐
 sge/pbs/lsf_controller ─► their launchers     ─┴► cluster_controller(): this host's address,
 ssh_controller(...)    ─► SshLauncher(...)          day-long launch windows, output in logs
 controller(launcher)   ─► any plugin, by object or by registered name
```

An engine (``pycrew._engines``) knows how to start a worker; a factory here
splits the user's options between that engine's launcher and the controller,
so that the controller, its Executor and the joblib backend can build any
engine's controller without the engines knowing the controller.
"""

from __future__ import annotations

import inspect
import math
import sys
from typing import TYPE_CHECKING, Any

from .._engines._cluster import STARTUP_LOG, cluster_host
from .._engines._local import LocalLauncher
from .._engines._registry import load
from .._errors import LaunchError
from .._operations._logs import LOG_BYTES_MAX
from ._cloud import aws_batch_controller, kubernetes_controller
from ._controller import Controller

if TYPE_CHECKING:
    import os
    from collections.abc import Callable, Mapping, Sequence

    from .._engines._launcher import Launcher
    from .._engines._pbs import Flavor
    from .._operations._metrics import Metrics
    from .._resources import Resources
    from .._wire._tls import TLS


def controller(launcher: Launcher | str, **options: Any) -> Controller:
    """A controller whose workers start through ``launcher``.

    Args:
        launcher: a ``pycrew.launchers.Launcher`` object, or the name of a
            launcher registered under the entry point group
            ``pycrew.launchers`` (made with no arguments).
        **options: the controller options, as for ``local_controller``
            (``workers``, ``host``, ``tls``, ``seconds_idle``, ...).

    Raises:
        LaunchError: the named launcher is not registered, or is broken.
    """
    if isinstance(launcher, str):
        name = launcher
        cls = load(name)
        try:
            inspect.signature(cls).bind()
        except TypeError as exc:
            raise LaunchError(
                f"launcher {name!r} cannot be made without arguments ({exc}); "
                "make it yourself and pass the object"
            ) from exc
        launcher = cls()
    return Controller(launcher, **options)


def cluster_controller(
    launcher: Launcher,
    name: str | None,
    workers: int,
    host: str | None,
    port: int,
    tls: TLS | str | None,
    options: dict[str, Any],
) -> Controller:
    """A controller over a scheduler's launcher, with a cluster's defaults.

    Workers dial this machine's address on its default route unless ``host``
    says otherwise; jobs may wait in a queue for a day before they count as
    failed; the queue is not asked more than twice a second; what tasks print
    stays in the jobs' logs unless ``relay_output=True``.
    """

    options.setdefault("seconds_interval", 0.5)
    options.setdefault("seconds_launch", 86400)
    options.setdefault("relay_output", False)
    host = cluster_host() if host is None else host
    return Controller(
        launcher, name=name, workers=workers, host=host, port=port, tls=tls, **options
    )


def ssh_controller(
    hosts: Sequence[str],
    name: str | None = None,
    workers: int | None = None,
    host: str | None = None,
    port: int = 0,
    tls: TLS | str | None = "automatic",
    *,
    ssh_port: int = 22,
    user: str | None = None,
    identity: str | os.PathLike[str] | None = None,
    known_hosts: str | os.PathLike[str] | None = None,
    tunnel: bool = False,
    python: str | None = None,
    ssh_options: Sequence[str] = (),
    **options: Any,
) -> Controller:
    """A controller whose workers run on other machines, started over ssh.

    ``workers`` defaults to one per entry of ``hosts`` (list a host twice for
    two workers there). With ``tunnel=True`` the controller listens on
    loopback (``host`` defaults to ``127.0.0.1``) and each worker reaches it
    through its ssh session's reverse tunnel; otherwise workers dial
    ``host``, by default this machine's address on the network its default
    route leaves by. TLS is automatic by default. The ssh arguments are
    ``SshLauncher``'s (``ssh_port`` is its ``port``); every other one is
    ``pycrew.local_controller``'s.
    """

    from .._engines._ssh import SshLauncher  # an engine loads when it is used

    launcher = SshLauncher(
        hosts,
        port=ssh_port,
        user=user,
        identity=identity,
        known_hosts=known_hosts,
        tunnel=tunnel,
        python=python or sys.executable,
        ssh_options=ssh_options,
    )
    if host is None:
        host = "127.0.0.1" if tunnel else cluster_host()
    # a machine reached over ssh starts its worker in seconds, and its output
    # belongs in your terminal no more than a cluster job's
    options.setdefault("seconds_interval", 0.25)
    options.setdefault("seconds_launch", 60)
    count = len(launcher.hosts) if workers is None else workers
    return cluster_controller(launcher, name, count, host, port, tls, options)


def lsf_controller(
    name: str | None = None,
    workers: int = 1,
    host: str | None = None,
    port: int = 0,
    tls: TLS | str | None = "automatic",
    *,
    queue: str | None = None,
    cores: int | None = None,
    memory_gigabytes: float | None = None,
    walltime_minutes: int | None = None,
    script_lines: Sequence[str] = (),
    script_directory: str | os.PathLike[str] | None = None,
    log_output: str | None = "/dev/null",
    log_error: str | None = STARTUP_LOG,
    log_bytes_max: int | None = LOG_BYTES_MAX,
    bsub_options: Sequence[str] = (),
    python: str | None = None,
    array: bool = True,
    processes: int = 1,
    commands: str | os.PathLike[str] | None = None,
    **options: Any,
) -> Controller:
    """A controller whose workers are LSF jobs, submitted as job arrays.

    The LSF arguments are ``LsfLauncher``'s; ``host`` defaults to this
    machine's address on the network its default route leaves by, and
    ``tls`` to ``"automatic"``. Every other argument is
    ``pycrew.local_controller``'s. ``terminate()`` runs ``bkill`` on
    every job of this start still queued or running. Tested against stand-in
    commands only: no LSF runs here (docs/lsf.md).
    """
    from .._engines._lsf import LsfLauncher  # an engine loads when it is used

    launcher = LsfLauncher(
        queue=queue,
        cores=cores,
        memory_gigabytes=memory_gigabytes,
        walltime_minutes=walltime_minutes,
        script_lines=script_lines,
        script_directory=script_directory,
        log_output=log_output,
        log_error=log_error,
        log_bytes_max=log_bytes_max,
        bsub_options=bsub_options,
        python=python,
        array=array,
        processes=processes,
        commands=commands,
    )
    return cluster_controller(launcher, name, workers, host, port, tls, options)


def pbs_controller(
    name: str | None = None,
    workers: int = 1,
    host: str | None = None,
    port: int = 0,
    tls: TLS | str | None = "automatic",
    *,
    queue: str | None = None,
    cores: int | None = None,
    memory_gigabytes: float | None = None,
    walltime_minutes: int | None = None,
    script_lines: Sequence[str] = (),
    script_directory: str | os.PathLike[str] | None = None,
    log_output: str | None = "/dev/null",
    log_error: str | None = STARTUP_LOG,
    log_bytes_max: int | None = LOG_BYTES_MAX,
    pbs_options: Sequence[str] = (),
    python: str | None = None,
    array: bool = True,
    processes: int = 1,
    flavor: Flavor = "torque",
    commands: str | os.PathLike[str] | None = None,
    **options: Any,
) -> Controller:
    """A controller whose workers are PBS jobs (Torque or PBS Pro), submitted as arrays.

    The PBS arguments are ``PbsLauncher``'s; ``host`` defaults to this
    machine's address on the network its default route leaves by, and
    ``tls`` to ``"automatic"``. Every other argument is
    ``pycrew.local_controller``'s (``seed``, ``retries``,
    ``crashes_max``, ...). ``terminate()`` runs ``qdel`` on every job this
    controller submitted that is still queued or running.
    """
    from .._engines._pbs import PbsLauncher  # an engine loads when it is used

    launcher = PbsLauncher(
        queue=queue,
        cores=cores,
        memory_gigabytes=memory_gigabytes,
        walltime_minutes=walltime_minutes,
        script_lines=script_lines,
        script_directory=script_directory,
        log_output=log_output,
        log_error=log_error,
        log_bytes_max=log_bytes_max,
        pbs_options=pbs_options,
        python=python,
        array=array,
        processes=processes,
        flavor=flavor,
        commands=commands,
    )
    return cluster_controller(launcher, name, workers, host, port, tls, options)


def sge_controller(
    name: str | None = None,
    workers: int = 1,
    host: str | None = None,
    port: int = 0,
    tls: TLS | str | None = "automatic",
    *,
    queue: str | None = None,
    cores: int | None = None,
    parallel_environment: str = "smp",
    memory_gigabytes: float | None = None,
    walltime_minutes: int | None = None,
    script_lines: Sequence[str] = (),
    script_directory: str | os.PathLike[str] | None = None,
    log_output: str | None = "/dev/null",
    log_error: str | None = STARTUP_LOG,
    log_bytes_max: int | None = LOG_BYTES_MAX,
    sge_options: Sequence[str] = (),
    python: str | None = None,
    array: bool = True,
    processes: int = 1,
    **options: Any,
) -> Controller:
    """A controller whose workers are Grid Engine jobs, submitted as array jobs.

    The Grid Engine arguments are ``SgeLauncher``'s; ``host`` defaults
    to this machine's address on the network its default route leaves by,
    and ``tls`` to ``"automatic"``. Every other argument is
    ``pycrew.local_controller``'s. ``terminate()`` runs ``qdel`` on every
    job of this start still queued or running.
    """
    from .._engines._sge import SgeLauncher  # an engine loads when it is used

    launcher = SgeLauncher(
        queue=queue,
        cores=cores,
        parallel_environment=parallel_environment,
        memory_gigabytes=memory_gigabytes,
        walltime_minutes=walltime_minutes,
        script_lines=script_lines,
        script_directory=script_directory,
        log_output=log_output,
        log_error=log_error,
        log_bytes_max=log_bytes_max,
        sge_options=sge_options,
        python=python,
        array=array,
        processes=processes,
    )
    return cluster_controller(launcher, name, workers, host, port, tls, options)


def slurm_controller(
    name: str | None = None,
    workers: int = 1,
    host: str | None = None,
    port: int = 0,
    tls: TLS | str | None = "automatic",
    *,
    partition: str | None = None,
    cpus_per_task: int | None = None,
    memory_gigabytes_per_cpu: float | None = None,
    memory_gigabytes_required: float | None = None,
    time_minutes: int | None = None,
    script_lines: Sequence[str] = (),
    script_directory: str | os.PathLike[str] | None = None,
    log_output: str | None = "/dev/null",
    log_error: str | None = STARTUP_LOG,
    log_bytes_max: int | None = 100 << 20,
    sbatch_options: Sequence[str] = (),
    python: str | None = None,
    array: bool = True,
    processes: int = 1,
    seconds_interval: float = 0.5,
    seconds_timeout: float = 60,
    seconds_launch: float = 86400,
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
    seconds_drain: float = 0,
    memory: int | None = None,
    relay_output: bool = False,
    resources: Mapping[str, int | str] | Resources | None = None,
) -> Controller:
    """A controller whose workers are SLURM jobs, submitted as job arrays.

    How jobs are submitted (``partition``, ``cpus_per_task``,
    ``memory_gigabytes_per_cpu``, ``memory_gigabytes_required``, ``time_minutes``,
    ``script_lines``, ``script_directory``, ``log_output``, ``log_error``,
    ``log_bytes_max``, ``sbatch_options``, ``python``, ``array``) is
    ``pycrew.launchers.SlurmLauncher``'s to say; see there.

    Args:
        name: the controller's name, part of every job name
            (``pycrew.<name>.<token>``).
        workers: the most workers (jobs) auto-scaling keeps at once.
        host: the address compute nodes dial; by default this machine's
            address on the network its default route leaves by.
        port: the port to listen on; 0 lets the OS pick.
        tls: ``"automatic"`` by default: tasks cross the cluster's network.
        log_error: by default (``"(startup)"``) a job's stderr is kept only
            until its worker connects, so that a job that exits first can
            say why in the ``LaunchError`` raised after at most two such
            jobs; a path (SLURM patterns allowed) keeps it all, and is read
            the same way; ``"/dev/null"`` discards it.
        seconds_launch: a job that has not connected by then (one day by
            default: it may wait in the queue) is cancelled and replaced.

    The other arguments are those of ``pycrew.local_controller``, except
    that ``relay_output`` is off by default: with many jobs, their output
    belongs in their logs.
    ``terminate()`` cancels every job this controller submitted that is still
    queued or running.
    """

    from .._engines._slurm import SlurmLauncher  # an engine loads when it is used

    launcher = SlurmLauncher(
        partition=partition,
        cpus_per_task=cpus_per_task,
        memory_gigabytes_per_cpu=memory_gigabytes_per_cpu,
        memory_gigabytes_required=memory_gigabytes_required,
        time_minutes=time_minutes,
        script_lines=script_lines,
        script_directory=script_directory,
        log_output=log_output,
        log_error=log_error,
        log_bytes_max=log_bytes_max,
        sbatch_options=sbatch_options,
        python=python,
        array=array,
        processes=processes,
    )
    return Controller(
        launcher,
        name=name,
        workers=workers,
        host=cluster_host() if host is None else host,
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
        seconds_drain=seconds_drain,
        memory=memory,
        resources=resources,
    )


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
    seconds_drain: float = 0,
    memory: int | None = None,
    relay_output: bool = True,
    template: bool = True,
    resources: Mapping[str, int | str] | Resources | None = None,
    shared_memory: bool = True,
    gpus: Sequence[int | str] | None = None,
    capacity: Mapping[str, int | str] | None = None,
) -> Controller:
    """A controller whose workers are subprocesses of this machine.

    Args:
        name: the controller's name (default: 8 random hex characters).
        workers: the most workers auto-scaling keeps at once.
        host: the address to listen on; workers dial it.
        port: the port to listen on; 0 lets the OS pick a free one.
        tls: ``None``/``"none"``, ``"automatic"``, or a ``pycrew.TLS``.
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
            ``CrashLimitError``.
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
        metrics: a ``pycrew.Metrics`` to have every worker sample its own
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
        seconds_drain: what a task that gives no ``seconds_timeout`` is taken
            to need: a worker whose job (or ``seconds_wall``) ends sooner
            hands it back and leaves, and a fresh worker runs it (a task's own
            ``seconds_timeout`` is what it needs, when given). 0: such tasks
            are not judged.
        memory: the most bytes of unfinished tasks (pickled, with their data)
            the controller holds, as mirai's ``memory=``: ``push()`` waits for
            room (up to ``seconds_timeout``, then ``CrewTimeoutError``),
            ``walk()``/``map()`` submit each task as room frees, and
            ``try_push()`` returns ``None`` at once. A task alone always fits.
        relay_output: print what tasks print (``print()``, ``sys.stdout``
            and ``sys.stderr``) here too, each line after ``[task name]``.
        retry_crashes: run a task that crashed its worker again by itself:
            ``crashes_max`` attempts here (at least one), then down the
            ``backup`` chain, until it succeeds or the chain ends. The record
            says how many attempts it took (``attempts``) and where it ran.
        template: once the first workers run, fork later ones from a
            template process that has imported what a worker needs (a few
            milliseconds each, so ``tasks_max=1`` is cheap); ``False``: every
            worker starts as a fresh interpreter.
        resources: what each task needs unless its push says otherwise
            (``{"cpus": 2, "memory": "4 GB", "gpus": 1}``, named counts
            too); workers are launched with that shape. See "Resources".
        gpus: the ids of the GPUs workers may have (default: those this
            process sees, from ``CUDA_VISIBLE_DEVICES`` or ``nvidia-smi``).
            A task asking for ``gpus=n`` runs on a worker that sees ``n``
            of them, its own, through ``CUDA_VISIBLE_DEVICES``.
        capacity: what the machine has for workers with a shape, where its
            own figures are not what you want: fewer ``cpus`` or less
            ``memory``, or named counts (``{"license": 2}``).
        shared_memory: arrays and buffers of 1 MiB or more travel between the
            controller and its workers through shared memory (anonymous
            memory files the kernel frees with their last holder) instead of
            the socket; ``False``: everything goes through the socket.
    """
    return Controller(
        LocalLauncher(
            log_directory=log_directory,
            log_join=log_join,
            log_bytes_max=log_bytes_max,
            python=python,
            template=template,
            gpus=gpus,
            capacity=capacity,
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
        seconds_drain=seconds_drain,
        memory=memory,
        resources=resources,
        shared_memory=shared_memory,
    )


def engine_factory(name: object) -> Callable[..., Controller] | None:
    """The factory of the built-in engine ``name`` names (``None`` is the local one), or None.

    What the Executor and the joblib backend build when given an engine's name;
    any other name is a launcher plugin's, for ``controller()``.
    """
    if name is not None and not isinstance(name, str):
        return None
    return _ENGINES.get(name)


_ENGINES: dict[str | None, Callable[..., Controller]] = {
    None: local_controller,
    "local": local_controller,
    "slurm": slurm_controller,
    "sge": sge_controller,
    "pbs": pbs_controller,
    "lsf": lsf_controller,
    "aws_batch": aws_batch_controller,
    "kubernetes": kubernetes_controller,
}
