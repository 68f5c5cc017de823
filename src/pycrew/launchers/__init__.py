"""Launcher plugins: the public contract for starting workers somewhere.

A plugin subclasses :class:`Launcher` and implements ``launch_worker`` (and,
for batch schedulers, ``launch_workers``); one for a batch scheduler may
subclass :class:`ClusterLauncher` and give only its script directives and
commands. Third-party launchers register under the entry point group
``pycrew.launchers``. The engines' own launchers live with their engines
(``pycrew._local``, ``_slurm``, ``_sge``, ``_pbs``, ``_lsf``, ``_ssh``) and are offered
here too.
"""

from typing import TYPE_CHECKING

from ._base import Launcher, WorkerSpec
from ._registry import available, load

if TYPE_CHECKING:
    from .._cluster import ClusterJob, ClusterLauncher
    from .._local import LocalLauncher
    from .._lsf import LsfJob, LsfLauncher
    from .._pbs import PbsJob, PbsLauncher
    from .._sge import SgeJob, SgeLauncher
    from .._slurm import SlurmJob, SlurmLauncher
    from .._ssh import SshLauncher

# the engines import the controller, which imports this package: loaded on first use
_HOMES = {
    "ClusterJob": "_cluster",
    "ClusterLauncher": "_cluster",
    "LocalLauncher": "_local",
    "LsfJob": "_lsf",
    "LsfLauncher": "_lsf",
    "PbsJob": "_pbs",
    "PbsLauncher": "_pbs",
    "SgeJob": "_sge",
    "SgeLauncher": "_sge",
    "SlurmJob": "_slurm",
    "SlurmLauncher": "_slurm",
    "SshLauncher": "_ssh",
}


def __getattr__(name: str) -> object:
    import importlib

    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'pycrew.launchers' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"pycrew.{home}"), name)
    globals()[name] = value
    return value


__all__ = [
    "ClusterJob",
    "ClusterLauncher",
    "Launcher",
    "LocalLauncher",
    "LsfJob",
    "LsfLauncher",
    "PbsJob",
    "PbsLauncher",
    "SgeJob",
    "SgeLauncher",
    "SlurmJob",
    "SlurmLauncher",
    "SshLauncher",
    "WorkerSpec",
    "available",
    "load",
]
