"""Integrations with other libraries, each in an optional extra.

The joblib backend (``_joblib``, with ``_joblib_light`` registering its name
without importing joblib, and ``_joblib_pool`` keeping its shared, warm
controllers and its one thread) and result tables for pandas (``_pandas``).
Nothing below this package imports it, and ``import pycrew`` imports none of
the libraries it serves.
"""
