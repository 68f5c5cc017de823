"""Launcher plugins: the public contract for starting workers somewhere.

A plugin subclasses ``Launcher`` and implements ``launch_worker`` (and,
for batch schedulers, ``launch_workers``); one for a batch scheduler may
subclass ``ClusterLauncher`` and give only its script directives and
commands. Third-party launchers register under the entry point group
``pycrew.launchers``. The contract and the engines' own launchers live in
``pycrew._engines``; this module is their public face.
"""

from typing import TYPE_CHECKING

from .._engines._launcher import Launcher, WorkerSpec
from .._engines._registry import available, load

if TYPE_CHECKING:
    from .._engines._aws_batch._launcher import AwsBatchLauncher
    from .._engines._cluster import ClusterJob, ClusterLauncher
    from .._engines._kubernetes._launcher import KubernetesLauncher
    from .._engines._local import LocalLauncher
    from .._engines._lsf import LsfJob, LsfLauncher
    from .._engines._pbs import PbsJob, PbsLauncher
    from .._engines._sge import SgeJob, SgeLauncher
    from .._engines._slurm import SlurmJob, SlurmLauncher
    from .._engines._ssh import SshLauncher

# an engine's module loads on first use: a plugin that imports Launcher pays for none of them
_HOMES = {
    "AwsBatchLauncher": "_engines._aws_batch._launcher",
    "ClusterJob": "_engines._cluster",
    "ClusterLauncher": "_engines._cluster",
    "KubernetesLauncher": "_engines._kubernetes._launcher",
    "LocalLauncher": "_engines._local",
    "LsfJob": "_engines._lsf",
    "LsfLauncher": "_engines._lsf",
    "PbsJob": "_engines._pbs",
    "PbsLauncher": "_engines._pbs",
    "SgeJob": "_engines._sge",
    "SgeLauncher": "_engines._sge",
    "SlurmJob": "_engines._slurm",
    "SlurmLauncher": "_engines._slurm",
    "SshLauncher": "_engines._ssh",
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
    "AwsBatchLauncher",
    "ClusterJob",
    "ClusterLauncher",
    "KubernetesLauncher",
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
