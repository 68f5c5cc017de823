"""Engines: where and how workers start, and how to find them again.

```
 Scaler ── launch_workers(specs) ──► Launcher (_launcher: the plugin contract)
                                       ├─ LocalLauncher (_local): processes here, forked
                                       │   from a template after the first launch
                                       ├─ ClusterLauncher (_cluster) ─► SLURM, Grid Engine,
                                       │   PBS, LSF: one array job per scaling step
                                       └─ SshLauncher (_ssh): a process on another host
 monitors (LocalMonitor, SlurmMonitor, ...) ── find and end leftovers after a crash
```

An engine decides how a worker starts, never how many: the autoscaler does.
Plugins found by entry point load through ``_registry``; ``pycrew.launchers``
is the public face of this package for plugin authors. Each engine's
``*_controller()`` factory lives with the user's side.
"""
