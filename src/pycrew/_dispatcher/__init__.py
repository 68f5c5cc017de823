"""The dispatcher: the threads that serve workers and keep their number right.

```
 push ─► Dispatcher.submit ─► queue ─► TASK ─► worker      (dispatcher thread, one port)
           │  accept ─► _handshake ─► WELCOME                   _pacing: wait or wake?
           │  waiting for inputs (_task) ─► released ─► queue   _locality: run it where
           └─ RESULT ─► Task resolved (_task) ─► future settled   its input is kept
 result() on a running task ─► _borrow: the caller reads that worker's socket itself
 push / disconnect ─► Scaler (scaler thread) ─► Autoscaler (pure) ─► launcher
```

``Task`` lives here because the dispatcher resolves tasks; the user's side
reads them, and builds their records (``pycrew._results``) once. The scaler
owns the launcher, so every launch, poll and kill runs on its thread, never
on the dispatcher's loop.
"""
