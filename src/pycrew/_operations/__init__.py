"""Operations: what helps a person run pycrew and see what it does.

Resource metrics (``_metrics``), worker log caps and output relay (``_logs``),
the per-user registry of launched workers that monitors read after a crash
(``_ledger``), plain-words diagnosis of a worker that never connected
(``_diagnose``) and progress bars (``_progress``). Each is a leaf: it imports
nothing of pycrew but errors, so every other layer may use it.
"""
