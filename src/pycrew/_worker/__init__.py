"""The worker process: what ``python -m pycrew worker`` runs.

```
 _entry (argv, environment) ─► _worker: dial, prove the secret, then one task at a time
        main thread: reads between tasks ─► _evaluate ─► RESULT (_inflow buffers reads)
        reader thread: reads while a task runs ─► inbox (woken by _lending after 2 ms)
                                                  ├─ _setup: shared objects, __main__ state
                                                  └─ _values: inputs in, results out (kept)
 _watchdog: a separate small process that ends the worker when it cannot end itself
 _template: a pre-imported process that forks local workers in a millisecond or two
```

A worker imports only this package, the wire and a few operations (log
caps, metrics when asked for): never the user's side or the dispatcher, so
that its cold start stays short.
"""
