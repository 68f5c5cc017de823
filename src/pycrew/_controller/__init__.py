"""The user's side: the controller and every front end over it.

```
 user ─► Controller.push/walk/map ─► _push: Task ─► the dispatcher (a layer down)
   ▲        │                                        │ resolved Task
   │        └─► TaskFuture (_futures) ◄── settled ◄──┘
   └── records, pop/collect/wait (_records), Executor, asyncio, groups, sequential
```

``*_controller()`` factories (``_factories``) pick an engine's launcher and its
defaults; shared objects, set-up steps and a script's functions (``_share``,
``_code``) are prepared here once and handed to the dispatcher as frames.
Argument checks (``_checks``) run before anything is queued. Nothing here runs
on a worker.
"""
