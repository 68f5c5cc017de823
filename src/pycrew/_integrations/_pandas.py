"""``to_pandas()``: records and summaries as data frames (the ``pandas`` extra)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._errors import ArgumentTypeError, CrewError
from .._results import Summary, TaskResult, WorkerSummary

if TYPE_CHECKING:
    from collections.abc import Iterable

    import pandas


def to_pandas(
    rows: Iterable[TaskResult | Summary | WorkerSummary] | Summary | WorkerSummary | None,
) -> pandas.DataFrame:
    """A data frame with one row per record (or summary row), columns as the fields.

    Takes what ``map()``, ``collect()`` or ``summary()`` (either ``by``)
    return; ``status`` becomes a plain string. An empty input gives an empty
    frame with the record's columns.

    Raises:
        CrewError: pandas is not installed (``pip install pandas``).
    """
    try:
        import pandas
    except ImportError as exc:
        raise CrewError("to_pandas() needs pandas: pip install pandas") from exc
    if rows is None:
        rows = []
    elif isinstance(rows, (Summary, WorkerSummary)):
        rows = [rows]
    items: list[Any] = list(rows)
    kinds = {type(row) for row in items}
    if not kinds <= {TaskResult, Summary, WorkerSummary} or len(kinds) > 1:
        raise ArgumentTypeError(
            "to_pandas() takes TaskResult records or summary rows of one kind, "
            f"got {sorted(k.__name__ for k in kinds)}"
        )
    kind = kinds.pop() if kinds else TaskResult
    return pandas.DataFrame([row.as_dict() for row in items], columns=list(kind._fields))
