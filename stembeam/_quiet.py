"""stembeam's library calls are as quiet as its command: what TensorFlow, Beam and Google's
packages print while stembeam imports them, or while it builds its model, is dropped; anything
else printed meanwhile is passed on. Scoped to those calls: the process's warning filters,
loggers and environment are as they were once the call returns.

What is dropped (each seen on this stack, none of them about the user's data):
- TensorFlow's C++ log at import and at its first ops, on a machine without a GPU: ``Unable to
  register cuFFT/cuDNN/cuBLAS factory``, ``TF-TRT Warning: Could not find TensorRT``, ``Could not
  find cuda drivers on your machine, GPU will not be used``, ``This
  TensorFlow binary is optimized to use available CPU instructions...``, ``oneDNN custom
  operations are on...`` (written on file descriptor 2 by C++: captured there, and the lines
  that are not these passed on);
- Deprecation, Future and User warnings raised by other packages' modules while they import
  (google.api_core's Python-version FutureWarning...); stembeam's own warnings still show;
- Beam's root-logger lines at import: ``crcmod package not found`` (google-crc32c is used
  instead) and ``Resource module is not available`` (an optional memory metric).
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import threading
import warnings

_NOISE = re.compile(
    r"Unable to register (cuFFT|cuDNN|cuBLAS) factory|TF-TRT Warning: Could not find TensorRT|Could not find cuda drivers on your machine|"
    r"This TensorFlow binary is optimized to use available CPU instructions|To enable the following instructions:|"
    r"oneDNN custom operations are on|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR|"
    r"crcmod package not found|Resource module is not available"
)
_CATEGORIES = (DeprecationWarning, PendingDeprecationWarning, FutureWarning, UserWarning, ImportWarning)
_lock = threading.RLock()


class _DropNoise(logging.Filter):
    def filter(self, record):
        return not _NOISE.search(record.getMessage())


@contextlib.contextmanager
def quiet():
    """Within the block: the known noise of stembeam's dependencies is dropped (see the module
    docstring); everything else is printed as it would have been. Nested blocks are one block."""
    with _lock:
        if getattr(_state, "depth", 0):
            _state.depth += 1
            try:
                yield
            finally:
                _state.depth -= 1
            return
        _state.depth = 1
        try:
            with _native_stderr_without_noise(), warnings.catch_warnings():
                for category in _CATEGORIES:
                    warnings.filterwarnings("ignore", category=category)
                    warnings.filterwarnings("default", category=category, module=r"stembeam(\..*)?$")
                drop = _DropNoise()
                root = logging.getLogger()
                root.addFilter(drop)
                try:
                    yield
                finally:
                    root.removeFilter(drop)
        finally:
            _state.depth = 0


class _State(threading.local):
    depth = 0


_state = _State()


@contextlib.contextmanager
def _native_stderr_without_noise():
    """File descriptor 2 goes to a temporary file for the block; afterwards its lines that are
    not known noise are written to the real one."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield  # no file descriptor 2 to redirect (an embedded interpreter)
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode("utf-8", "replace").splitlines(keepends=True) if not _NOISE.search(line)]
            if kept:
                os.write(2, "".join(kept).encode("utf-8"))
