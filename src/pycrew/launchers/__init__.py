"""Launcher plugins: the public contract for starting workers somewhere.

A plugin subclasses :class:`Launcher` and implements ``launch_worker`` (and,
for batch schedulers, ``launch_workers``). Third-party launchers register
under the entry point group ``pycrew.launchers``.
"""

from ._base import Launcher, WorkerSpec
from ._local import LocalLauncher
from ._registry import available, load
from ._slurm import SlurmJob, SlurmLauncher

__all__ = [
    "Launcher",
    "LocalLauncher",
    "SlurmJob",
    "SlurmLauncher",
    "WorkerSpec",
    "available",
    "load",
]
