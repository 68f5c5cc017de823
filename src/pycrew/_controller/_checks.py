"""Checks and shaping of what users pass in, before anything is queued.

Every function here raises ``ValueError`` or ``TypeError`` with a message
that says what to do, and has no side effects beyond a warning.
"""

from __future__ import annotations

import ipaddress
import math
import re
import secrets
import socket
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .._errors import ArgumentError, ArgumentTypeError, CrewWarning
from .._wire import _frames, _pickling

if TYPE_CHECKING:
    from .._wire._tls import TLS

ERROR_MODES = ("stop", "warn", "silent")


def check_seconds(label: str, value: float, allow_inf: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ArgumentTypeError(f"{label} must be a number of seconds, got {value!r}")
    if value < 0:
        raise ArgumentError(f"{label} must be >= 0, got {value!r}")
    if not allow_inf and math.isinf(value):
        raise ArgumentError(f"{label} must be finite")
    return float(value)


def check_count(label: str, value: float, minimum: int) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ArgumentTypeError(f"{label} must be a whole number or math.inf, got {value!r}")
    if value < minimum or (not math.isinf(value) and value != int(value)):
        raise ArgumentError(
            f"{label} must be a whole number >= {minimum} or math.inf, got {value!r}"
        )
    return value


def command_text(fn: Any) -> str:
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if qualname is None:
        return repr(fn)
    return f"{module}.{qualname}" if module and module != "builtins" else str(qualname)


def check_mapping(label: str, value: Mapping[str, Any] | None) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ArgumentTypeError(f"{label} must be a dict of names to values")
    bad = [k for k in value if not isinstance(k, str) or not k.isidentifier()]
    if bad:
        raise ArgumentError(f"{label} keys must be valid Python names, got {bad[0]!r}")
    return dict(value)


def check_error(error: str | None) -> None:
    if error is not None and error not in ERROR_MODES:
        raise ArgumentError(f"error must be None or one of {ERROR_MODES}, got {error!r}")


def task_inputs(
    iterable: Iterable[Any] | None, iterate: Mapping[str, Sequence[Any]] | None
) -> tuple[list[Any], bool]:
    """Task inputs, and whether they are named: each item the one positional
    argument of its task, or a dict of keyword arguments (``iterate``)."""
    if (iterable is None) == (iterate is None):
        raise ArgumentError("give the inputs either as an iterable or as iterate=, not both")
    if iterable is not None:
        if isinstance(iterable, (str, bytes, Mapping)):
            raise ArgumentTypeError(
                "iterable must be a sequence of inputs; for named inputs use iterate={'x': [...]}"
            )
        # the items as they are: a tuple each (made per task as it is pickled)
        # cost a million inputs 56 MB
        items = list(iterable)
        if not items:
            raise ArgumentError("there are no inputs")
        return items, False
    assert iterate is not None
    if not isinstance(iterate, Mapping) or not iterate:
        raise ArgumentError("iterate must be a non-empty dict of equal-length sequences")
    columns = {}
    for key, values in iterate.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise ArgumentError(f"iterate keys must be valid Python names, got {key!r}")
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            raise ArgumentTypeError(f"iterate[{key!r}] must be a sequence")
        columns[key] = list(values)
    lengths = {k: len(v) for k, v in columns.items()}
    if len(set(lengths.values())) != 1:
        raise ArgumentError(f"iterate sequences must have equal lengths, got {lengths}")
    count = next(iter(lengths.values()))
    if count == 0:
        raise ArgumentError("iterate sequences are empty: there are no inputs")
    return [{k: v[i] for k, v in columns.items()} for i in range(count)], True


def check_no_kwargs(method: str, kwargs: Mapping[str, Any]) -> None:
    """walk()/map() take no keyword arguments for the function: they could not be
    told from the call's own options (``names``, ``error``, ``warnings``, ...)."""
    if not kwargs:
        return
    first = next(iter(kwargs))
    raise ArgumentTypeError(
        f"{method}() takes no keyword arguments for the function, got {sorted(kwargs)}: "
        f"give every task the same value with data={{{first!r}: ...}} or "
        f"functools.partial(fn, {first}=...), or one value per task with "
        f"iterate={{{first!r}: [...]}}"
    )


def task_names(
    names: str | Sequence[str] | None, iterate: Mapping[str, Sequence[Any]] | None, count: int
) -> list[str]:
    if names is None:
        prefix = f"unnamed_task_{secrets.token_hex(6)}"
        return [f"{prefix}_{i + 1}" for i in range(count)]
    if isinstance(names, str):
        if iterate is None or names not in iterate:
            raise ArgumentError(f"names={names!r} must be a key of iterate")
        out = [str(v) for v in iterate[names]]
    else:
        out = list(names)
        if any(not isinstance(n, str) or not n for n in out):
            raise ArgumentError("names must be non-empty strings")
    if len(out) != count:
        raise ArgumentError(f"{len(out)} names for {count} inputs")
    return out


def blame(payload: tuple[Any, ...], exc: Exception) -> str:
    """Name the part of a task that cannot be pickled."""
    _kind, target, args, kwargs, data, task_globals = payload[:6]
    parts: list[tuple[str, Any]] = [("the function", target)]
    parts += [(f"argument {i + 1}", a) for i, a in enumerate(args)]
    parts += [(f"keyword argument {k!r}", v) for k, v in kwargs.items()]
    parts += [(f"data[{k!r}]", v) for k, v in data.items()]
    parts += [(f"globals[{k!r}]", v) for k, v in task_globals.items()]
    for label, value in parts:
        try:
            _pickling.dumps(value)
        except Exception as inner:
            return f"{label} ({type(value).__name__}): {inner}"
    return str(exc)


def check_host(host: str, tls: TLS, allow_public: bool) -> None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        try:
            address = ipaddress.ip_address(socket.gethostbyname(host))
        except (OSError, ValueError):
            return
    if (address.is_global or address.is_unspecified) and not allow_public:
        raise ArgumentError(
            f"host {host!r} is reachable from the internet or binds every interface; "
            "use the address of the network your workers share, or pass allow_public=True"
        )
    if not address.is_loopback and not tls.enabled:
        warnings.warn(
            f"host {host!r} is not loopback and TLS is off: the secret handshake keeps rogue "
            "workers out, but anyone on the network path can read or alter tasks. "
            "Use tls='automatic'.",
            CrewWarning,
            stacklevel=3,
        )


def check_cursor(since: object, limit: object) -> None:
    """``status()``'s cursor and window."""
    if isinstance(since, bool) or not isinstance(since, int) or since < 0:
        raise ArgumentTypeError(f"since must be a non-negative int, got {since!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ArgumentTypeError(f"limit must be None or a positive int, got {limit!r}")


def check_flag(label: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ArgumentTypeError(f"{label} must be True or False, got {value!r}")
    return value


def check_int(label: str, value: object, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentTypeError(f"{label} must be an int, got {value!r}")
    if minimum is not None and value < minimum:
        raise ArgumentError(f"{label} must be at least {minimum}, got {value}")
    return value


def check_port(port: object) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ArgumentError(f"port must be an int from 0 to 65535 (0: any free port), got {port!r}")
    return port


def check_seed(seed: object) -> int | None:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ArgumentTypeError(f"seed must be None or an int, got {seed!r}")
    return seed


def check_bytes_max(bytes_max: object) -> int:
    value = check_int("bytes_max", bytes_max)
    if not 1024 <= value <= _frames.BYTES_LIMIT:
        raise ArgumentError(
            f"bytes_max must be from 1024 to {_frames.BYTES_LIMIT} bytes, got {value}"
        )
    return value


#: a controller's name becomes part of file names, job names and worker ids
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_name(name: object) -> str:
    if not isinstance(name, str):
        raise ArgumentTypeError(f"name must be a string, got {name!r}")
    if not _NAME.fullmatch(name):
        raise ArgumentError(
            "a controller name is 1 to 64 ASCII letters, digits, '.', '_' or '-', "
            f"starting with a letter or digit (it names log files and jobs), got {name!r}"
        )
    return name


def check_intervals(interval: float, timeout: float) -> tuple[float, float]:
    """``seconds_interval`` (finite, > 0) and ``seconds_timeout`` (at least the interval)."""
    interval = check_seconds("seconds_interval", interval, False)
    if interval <= 0:
        raise ArgumentError("seconds_interval must be > 0")
    timeout = check_seconds("seconds_timeout", timeout)
    if timeout < interval:
        raise ArgumentError("seconds_timeout must be >= seconds_interval")
    return interval, timeout


def check_backup(name: str, controller: Any, backup: Any) -> None:
    """A backup runs tasks on workers, and a backup chain may not come back to the
    controller it starts from."""
    if backup is None:
        return
    if not backup._adopts:
        raise ArgumentError(
            f"controller {backup.name!r} cannot be a backup: it runs tasks only "
            "inside push(), in the calling thread"
        )
    link = backup
    while link is not None:
        if link is controller or link.name == name:
            raise ArgumentError(
                f"controller {name!r} cannot be its own backup, directly or down the chain"
            )
        link = link.backup


def check_env(env: object) -> dict[str, str]:
    """Variables for workers: names and values are strings; pycrew's own are its to set."""
    if env is None:
        return {}
    if not isinstance(env, Mapping):
        raise ArgumentTypeError(f"env must be a dict of strings, got {type(env).__name__}")
    out: dict[str, str] = {}
    for key, value in env.items():
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            raise ArgumentError(f"env names must be non-empty strings without '=', got {key!r}")
        if not isinstance(value, str) or "\0" in value:
            raise ArgumentTypeError(f"env[{key!r}] must be a string, got {value!r}")
        if key.startswith("PYCREW_"):
            raise ArgumentError(f"env[{key!r}]: variables named PYCREW_* are pycrew's own")
        out[key] = value
    return out


def check_retries(retries: object, retry_on: object) -> tuple[int, Any]:
    """How often a task that raises runs again, and for which exception types."""
    count = check_int("retries", retries, 0)
    kinds = retry_on if isinstance(retry_on, tuple) else (retry_on,)
    if not kinds or not all(isinstance(k, type) and issubclass(k, BaseException) for k in kinds):
        raise ArgumentTypeError(
            f"retry_on must be an exception class or a tuple of them, got {retry_on!r}"
        )
    return count, retry_on
