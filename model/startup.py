"""Start-up without Python's cyclic garbage collector (imports, model building, tracing)."""
from __future__ import annotations

import contextlib
import gc
import threading

_lock = threading.Lock()
_state = {"depth": 0, "was_enabled": True}


@contextlib.contextmanager
def collector_paused():
    """Pause the cyclic garbage collector while the block imports modules or builds and traces
    a model: millions of long-lived objects and few cycles, where collections took about 1.3 s
    of a job's 4.5 s start-up. When the last of such blocks (in any thread) ends, what exists is
    frozen (``gc.freeze``: later collections skip it; reference counting still frees it) and the
    collector runs again as before."""
    with _lock:
        if _state["depth"] == 0:
            _state["was_enabled"] = gc.isenabled()
            gc.disable()
        _state["depth"] += 1
    try:
        yield
    finally:
        with _lock:
            _state["depth"] -= 1
            if _state["depth"] == 0:
                gc.freeze()
                if _state["was_enabled"]:
                    gc.enable()
