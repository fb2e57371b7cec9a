"""What a stembeam command prints: only its own lines unless asked (-v/--verbose, --log_level).

Set up before TensorFlow or Beam is imported: TensorFlow's C++ log level is read from the
environment once, when its library loads, and Beam and Google's packages warn while they import.

What each noise line is and where it is stopped (quiet mode):
- ``E external/local_xla/... Unable to register cuFFT/cuDNN/cuBLAS factory``: TF's C++ log at
  import, ERROR level, printed on machines without a GPU -> ``TF_CPP_MIN_LOG_LEVEL=3``.
- google.api_core ``FutureWarning`` (Python version support), other dependencies'
  Deprecation/Future/User warnings -> ``warnings`` filters for every module but stembeam's own (also ``PYTHONWARNINGS``
  for worker processes).
- ``WARNING:root:crcmod package not found`` (apache_beam.io.tfrecordio at import; google-crc32c,
  installed with Beam's gcp extra, is used instead, and a missing checksum library is still an
  error when records are written) and ``WARNING:root:Resource module is not available``
  (apache_beam.ml.inference.base: its optional memory metric needs torch) are logged on the root
  logger -> the root logger's level; Beam's, absl's, TensorFlow's and Google's loggers inherit it.
Errors are not lost: a failing job raises, and the command prints one ``error:`` line.
"""
from __future__ import annotations

import logging
import os
import re
import sys
import warnings

LOGGER_NAME = "stembeam"
# stembeam's own modules: their warnings are about the user's inputs and are always shown.
OWN_MODULES = r"(stembeam|tests)(\..*)?$"
NOISY_CATEGORIES = (DeprecationWarning, PendingDeprecationWarning, FutureWarning, UserWarning, ImportWarning)
# TF's C++ minimum log level for a Python level: 0 all, 1 no INFO, 2 no WARNING, 3 no ERROR.
_TF_LEVELS = {"DEBUG": "0", "INFO": "0", "WARNING": "1", "ERROR": "2", "CRITICAL": "3"}

_state = {"verbose": False}


def wanted(argv) -> tuple:
    """``(verbose, log_level)`` from a command line, before any parser exists (Beam's parser
    needs Beam imported, and that import is the first thing to keep quiet)."""
    verbose, level = False, None
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        if arg in ("-v", "--verbose"):
            verbose = True
        elif arg in ("--log_level", "--log-level") and i + 1 < len(argv):
            level = argv[i + 1].upper()
        elif arg.startswith(("--log_level=", "--log-level=")):
            level = arg.split("=", 1)[1].upper()
    return verbose, level


def setup(verbose: bool = False, log_level: str | None = None) -> None:
    """Quiet by default; ``verbose`` shows every library's logs at INFO and every warning;
    ``log_level`` sets every logger's level (TF's C++ log follows it)."""
    _state["verbose"] = verbose or log_level in ("DEBUG", "INFO")
    level = logging.INFO if verbose else getattr(logging, log_level or "", None)
    if verbose or log_level:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0" if verbose else _TF_LEVELS.get(log_level, "3")
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # a level the caller chose stays
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    own = logging.getLogger(LOGGER_NAME)
    own.handlers[:] = [handler]
    own.propagate = False
    if level is None:
        own.setLevel(logging.INFO)
        # Third-party loggers without a level of their own (Beam's, absl's, TF's, Google's, and
        # direct logging.warning() calls) inherit the root's.
        logging.root.setLevel(logging.CRITICAL)
        for name in ("absl", "tensorflow", "apache_beam"):
            logging.getLogger(name).setLevel(logging.NOTSET)
        for category in NOISY_CATEGORIES:
            warnings.filterwarnings("ignore", category=category)
            warnings.filterwarnings("default", category=category, module=OWN_MODULES)
        noisy = ",".join(f"ignore::{c.__name__}" for c in NOISY_CATEGORIES)
        os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), noisy]))
        if not isinstance(sys.stderr, _WithoutTracebacks):
            sys.stderr = _WithoutTracebacks(sys.stderr)
    else:
        own.setLevel(level)
        logging.basicConfig(level=level, format="%(levelname)s:%(name)s:%(message)s", force=True)
        logging.root.setLevel(level)
        warnings.simplefilter("default")


class _WithoutTracebacks:
    """sys.stderr without the tracebacks Beam's SDK worker prints there when a bundle fails
    (apache_beam/runners/worker/sdk_worker.py prints, then raises): the failure still ends the
    job, and the command prints one line for it."""

    def __init__(self, stream):
        self._stream = stream
        self._dropped = False

    def write(self, text):
        if text.startswith("Traceback (most recent call last):"):
            self._dropped = True
            return len(text)
        if self._dropped and text == "\n":
            self._dropped = False
            return len(text)
        self._dropped = False
        return self._stream.write(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def verbose() -> bool:
    """Whether tracebacks and library logs are wanted."""
    return _state["verbose"]


# Errors whose message is the whole story for a user (it names the file or option and the
# reason): printed without their type.
PLAIN_ERRORS = ("ModelFileError", "ModelNotFoundError", "AudioDecodeError", "AudioEncodeError", "ManifestError", "OutputInUse", "OutputLost")
_TYPE_PREFIX = re.compile(r"^(?:[A-Za-z_][\w]*\.)*([A-Z]\w*(?:Error|Exception|Exit|Interrupt))(?: \[Errno \d+\])?: ")
_STEP = re.compile(r" ?\[while running '[^']*'\]")


def error_line(error: BaseException) -> str:
    """One line for a failed command: the innermost cause of the error's message (a runner wraps a
    worker's exception and its traceback in its own), prefixed by its type unless it is one of
    stembeam's own user-facing errors (PLAIN_ERRORS) or usage errors, with the first Beam step
    ``[while running 'Step']`` it names."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if isinstance(error, SystemExit):
        return f"error: {lines[0] if lines else ''}"
    # A runner's "job failed: <a worker's traceback>": its last "Type: message" line is the cause.
    causes = [line for line in lines if _TYPE_PREFIX.match(line)]
    text = causes[-1] if (len(lines) > 1 and causes) else (lines[0] if lines else "")
    step = next((match.group(0).strip() for line in lines for match in [_STEP.search(line)] if match), None)
    text = _STEP.sub("", text).strip()
    full = f"{type(error).__name__}: {text}" if text else type(error).__name__
    while True:  # "RuntimeError: IndexError: ..." -> "IndexError: ..."
        match = _TYPE_PREFIX.match(full)
        if match is None or not _TYPE_PREFIX.match(full[match.end():]):
            break
        full = full[match.end():]
    match = _TYPE_PREFIX.match(full)
    if match is not None and match.group(1) in PLAIN_ERRORS:
        full = full[match.end():]
    return f"error: {full}" + (f" {step}" if step else "")
