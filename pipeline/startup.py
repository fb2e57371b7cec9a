"""Start-up tricks of the ``stembeam`` command alone (never of the library: each changes the
whole process): Python's cyclic garbage collector paused while the command imports its modules,
and Keras' optional scikit-learn, matplotlib and Pillow imports left out. Each saves about a
second of every command's start-up (tests/benchmarks/startup.py measures them)."""
from __future__ import annotations

import contextlib
import gc
import importlib.abc
import sys
import threading

from stembeam._compat import KERAS_OPTIONAL_IMPORTERS

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


class _KerasWithoutOptionals(importlib.abc.MetaPathFinder):
    """While Keras' modules that use scikit-learn (its wrappers), matplotlib (two plotting
    utilities) or Pillow (image files) are being imported, those packages read as absent to them
    (Keras then leaves the feature off, as when they are not installed); every other import of
    them is untouched. Keras imports them at start-up, none of which stembeam uses: about 1.5 s
    of a command's start-up on this stack (librosa's dependencies install scikit-learn and
    matplotlib)."""

    def find_spec(self, fullname, path=None, target=None):
        importers = KERAS_OPTIONAL_IMPORTERS.get(fullname.partition(".")[0])
        if importers and any(_initialising(name) for name in importers):
            raise ModuleNotFoundError(f"{fullname} is not loaded for Keras' optional utilities", name=fullname)
        return None


def _initialising(name: str) -> bool:
    module = sys.modules.get(name)
    return module is not None and getattr(getattr(module, "__spec__", None), "_initializing", False)


def hide_keras_optionals() -> None:
    """Install the finder (the command's process only; before Keras is imported)."""
    if "keras" not in sys.modules and not any(isinstance(finder, _KerasWithoutOptionals) for finder in sys.meta_path):
        sys.meta_path.insert(0, _KerasWithoutOptionals())
