"""Resource samples of workers: read them back, as a table, or as a picture.

Turn sampling on with ``pycrew.local_controller(metrics=pycrew.Metrics(path))``;
see docs/metrics.md.

    import pycrew.metrics

    records = pycrew.metrics.read("metrics")          # a folder, a file, or worker logs
    frame = pycrew.metrics.to_pandas(records)         # needs pandas
    pycrew.metrics.plot(records, "resident", "memory.png")   # needs matplotlib
"""

from ._operations._metrics import MARKER, METRICS, Metrics, plot, read, to_pandas

__all__ = ["MARKER", "METRICS", "Metrics", "plot", "read", "to_pandas"]
