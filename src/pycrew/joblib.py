"""The ``"pycrew"`` backend of joblib, and so of scikit-learn's ``n_jobs``.

Needs the ``joblib`` extra (``pip install joblib``); see docs/joblib.md.

    import joblib
    import pycrew.joblib  # registers the backend (import pycrew alone does, lazily)

    with joblib.parallel_config(backend="pycrew", n_jobs=4):
        squares = joblib.Parallel()(joblib.delayed(pow)(i, 2) for i in range(100))

Options of ``parallel_config`` (beside joblib's own): ``controller=`` an
existing ``pycrew.Controller`` (used as is, left running), or the
options of a controller shared by every ``Parallel`` call with those
options (``launcher=`` ``"local"``/``"slurm"``/a plugin, ``workers=``,
``tls=``, ...): kept warm between calls, sized by ``n_jobs``, and ended after
its ``seconds_idle`` without a call, at interpreter exit, or by
``end_shared_controllers()``.
"""

from ._integrations._joblib import PycrewBackend, end_shared_controllers, register

register()

__all__ = ["PycrewBackend", "end_shared_controllers", "register"]
