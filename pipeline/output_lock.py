"""One job at a time per output: a lock file that names the job holding it.

Two jobs writing one output would delete each other's work files and temporaries and interleave
their markers, so a second job refuses to start while the first is alive. The lock
``{output}/.stembeam-job.json`` holds the job, its run id, host, pid, start time and a heartbeat
renewed every HEARTBEAT seconds; it is taken exclusively, so two jobs starting at the same
instant never both hold it:

- local output: the job holds an flock on the file for its whole life (``LOCK_EX|LOCK_NB``; the
  file is opened with ``O_CREAT`` and checked to still be the one at the path once locked). The
  kernel drops the flock when the process ends, however it ends, so the lock of a killed job
  is free at once; the file it left is taken over, unless it names a live pid of this host or
  another host's heartbeat younger than STALE_AFTER (a holder that held no flock: a job of
  another host on a shared filesystem, or of a stembeam before flock).
- gs:// output (google-cloud-storage, which honours STORAGE_EMULATOR_HOST): the object is
  created with ``if_generation_match=0``, so of two creators one gets 412; a lock whose holder
  is dead (its pid gone on this host, or a heartbeat older than STALE_AFTER) is deleted with
  ``if_generation_match=<its generation>`` and then created again with ``=0``, so of two jobs
  taking a stale lock over only one succeeds.

The heartbeat renews only this job's own lock: locally the file it holds the flock on (in place,
and only while the path still is that file); on GCS with ``if_generation_match=<the generation
it wrote last>``. A lock found gone or replaced (deleted by hand and taken by another job, or on
GCS taken over after this job's heartbeats failed for STALE_AFTER) is lost: the heartbeat logs
an error naming the new holder and stops, and the job is stopped: its main thread gets SIGINT,
as from Ctrl-C (SIGUSR1 with Python's Ctrl-C handler when the process was started with SIGINT
ignored, as nohup and background jobs are), and leaving the ``with`` block raises OutputLost (``error: ...`` and exit code 1 from
the command line) instead of releasing. The output is the new holder's: the lost job neither
removes the lock nor sweeps the output (``lock.check()`` before the last sweep). Releasing
removes the lock only while it is still this job's.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import socket
import threading
import time
import uuid

from stembeam.transforms import storage

LOGGER = logging.getLogger("stembeam.lock")
LOCK_FILE = ".stembeam-job.json"
HEARTBEAT = 60.0
STALE_AFTER = 5 * HEARTBEAT


class OutputInUse(SystemExit):
    """Another live job holds the output; the message names it."""


class OutputLost(SystemExit):
    """This job's lock was taken by another job while it ran; the message names that job."""


def lock_uri(output: str) -> str:
    return storage.join(output, LOCK_FILE)


def _alive(holder: dict) -> bool:
    if holder.get("host") == socket.gethostname():
        try:
            os.kill(int(holder["pid"]), 0)
        except (ProcessLookupError, ValueError, KeyError, TypeError, OverflowError):
            return False
        except PermissionError:
            return True
        return True
    try:
        return time.time() - float(holder.get("heartbeat", 0)) < STALE_AFTER
    except (TypeError, ValueError):
        return False


def _parse(data: bytes):
    """The holder's record, or None for an empty or half-written file."""
    try:
        holder = json.loads(data)
    except ValueError:
        return None
    return holder if isinstance(holder, dict) else None


def describe(holder: dict) -> str:
    try:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(holder.get("started", 0))))
    except (TypeError, ValueError, OverflowError, OSError):
        started = "?"
    return f"{holder.get('job', 'another job')} (run {holder.get('run_id')}, pid {holder.get('pid')} on {holder.get('host')}, started {started})"


class _LocalLock:
    """An flock held on the lock file for the job's life."""

    def __init__(self, path: str):
        self._path = path
        self._fd = None

    def _is_current(self, fd: int) -> bool:
        """Whether ``fd`` is still the file at the path (not removed by its holder, not replaced)."""
        try:
            here = os.stat(self._path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)

    @staticmethod
    def _rewrite(fd: int, data: bytes) -> None:
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))

    def acquire(self, data: bytes, run_id: str):
        """``(True, None)`` once held; ``(False, holder or None)`` when another job holds it."""
        os.makedirs(os.path.dirname(os.path.abspath(self._path)), exist_ok=True)
        for _ in range(100):
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return False, self.holder()
                if not self._is_current(fd):
                    continue  # its holder removed it between our open and our flock: open the new one
                left = _parse(os.pread(fd, 1 << 16, 0))
                if left is not None and left.get("run_id") != run_id and _alive(left):
                    return False, left  # a holder without the flock (another host, an earlier stembeam)
                self._rewrite(fd, data)
                self._fd, fd = fd, None
                return True, None
            finally:
                if fd is not None:
                    os.close(fd)
        return False, None

    def renew(self, data: bytes) -> bool:
        """Rewrite the lock, only while it is still ours; False when it was lost."""
        if self._fd is None or not self._is_current(self._fd):
            return False
        self._rewrite(self._fd, data)
        return True

    def holder(self):
        try:
            with open(self._path, "rb") as handle:
                return _parse(handle.read())
        except OSError:
            return None

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            if self._is_current(self._fd):
                os.unlink(self._path)  # while still flocked: nobody can take the removed file
        finally:
            os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        """Let go of the flock and leave the file (a lost lock: it is the new holder's)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _gcs_client():
    """A google-cloud-storage client with the default credentials (project None: object calls
    need none, and a missing default project must not fail the job); STORAGE_EMULATOR_HOST is
    honoured as by Beam's GCS filesystem."""
    from google.cloud import storage as gcs

    return gcs.Client(project=None)


class _GcsLock:
    """A gs:// object kept by generation preconditions."""

    def __init__(self, uri: str):
        bucket, _, self._name = uri[len("gs://"):].partition("/")
        self._bucket = _gcs_client().bucket(bucket)
        self._generation = None

    def _read(self):
        """``(generation, holder or None)`` of the live lock object; None when there is none
        (or it changed while being read: the caller looks again)."""
        from google.api_core import exceptions

        blob = self._bucket.get_blob(self._name)
        if blob is None:
            return None
        try:
            data = blob.download_as_bytes(if_generation_match=blob.generation)
        except (exceptions.NotFound, exceptions.PreconditionFailed):
            return None
        return blob.generation, _parse(data)

    def acquire(self, data: bytes, run_id: str):
        from google.api_core import exceptions

        for _ in range(20):
            blob = self._bucket.blob(self._name)
            try:
                blob.upload_from_string(data, content_type="application/json", if_generation_match=0)
                self._generation = blob.generation
                return True, None
            except exceptions.PreconditionFailed:
                pass
            found = self._read()
            if found is None:
                continue  # released (or replaced) meanwhile: create again
            generation, holder = found
            if holder is not None and holder.get("run_id") == run_id:
                self._generation = generation  # our own create, answered 412 when the client retried it
                return True, None
            if holder is not None and _alive(holder):
                return False, holder
            try:
                self._bucket.blob(self._name).delete(if_generation_match=generation)
            except (exceptions.PreconditionFailed, exceptions.NotFound):
                pass  # another job took it over (or released it) first: look again
        return False, None

    def renew(self, data: bytes) -> bool:
        from google.api_core import exceptions

        blob = self._bucket.blob(self._name)
        try:
            blob.upload_from_string(data, content_type="application/json", if_generation_match=self._generation)
        except (exceptions.PreconditionFailed, exceptions.NotFound):
            return False
        self._generation = blob.generation
        return True

    def holder(self):
        found = self._read()
        return None if found is None else found[1]

    def release(self) -> None:
        from google.api_core import exceptions

        if self._generation is None:
            return
        try:
            self._bucket.blob(self._name).delete(if_generation_match=self._generation)
        except (exceptions.PreconditionFailed, exceptions.NotFound):
            pass  # no longer ours: the new holder's lock stays
        self._generation = None

    def close(self) -> None:
        self._generation = None


class OutputLock:
    """``with OutputLock(output, "stembeam pipeline") as lock:`` holds ``{output}/.stembeam-job.json``
    for the job; ``lock.run_id`` names this run; ``lock.lost`` is set if another job took it."""

    def __init__(self, output: str, job: str):
        self._uri = lock_uri(output)
        self._output = output
        self.run_id = uuid.uuid4().hex[:12]
        self._record = {"job": job, "run_id": self.run_id, "host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
        self._stop = threading.Event()
        self._thread = None
        self._guard = threading.Lock()
        self._running = False  # inside the with block: a lost lock interrupts the main thread
        self._main = None
        self._signal, self._previous_handler = signal.SIGINT, None
        self.lost = threading.Event()
        self._lost_message = ""
        if self._uri.startswith("gs://"):
            self._lock = _GcsLock(self._uri)
        elif storage.is_local(self._uri):
            self._lock = _LocalLock(storage.local_path(self._uri))
        else:
            raise ValueError(f"{output}: outputs are local folders or gs:// (no exclusive lock for this filesystem)")

    def _data(self) -> bytes:
        return json.dumps({**self._record, "heartbeat": time.time()}).encode("utf-8")

    def __enter__(self) -> "OutputLock":
        held, holder = self._lock.acquire(self._data(), self.run_id)
        if not held:
            if holder is None:
                raise OutputInUse(f"{self._output}: another job took the output at the same moment; run again once it has ended")
            raise OutputInUse(
                f"{self._output} is in use by {describe(holder)}; wait for it to end, or delete {self._uri} if that job is gone"
            )
        if threading.current_thread() is threading.main_thread():
            self._main = threading.main_thread().ident
            # A process started with SIGINT ignored (nohup, a shell's background job, a CI runner)
            # is interrupted through SIGUSR1 instead, for the job's life only.
            self._signal = signal.SIGINT if callable(signal.getsignal(signal.SIGINT)) else signal.SIGUSR1
            if self._signal != signal.SIGINT:
                self._previous_handler = signal.signal(signal.SIGUSR1, signal.default_int_handler)
        self._running = True
        self._thread = threading.Thread(target=self._beat, name="stembeam-lock-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT):
            try:
                kept = self._lock.renew(self._data())
            except Exception:  # noqa: BLE001 - a missed heartbeat (network...) is retried next time
                continue
            if not kept:
                self._lose()
                return

    def _lose(self) -> None:
        try:
            holder = self._lock.holder()
        except Exception:  # noqa: BLE001 - only for the message
            holder = None
        now = describe(holder) if holder else "nobody (the lock is gone)"
        self._lost_message = (
            f"{self._output}: this job (run {self.run_id}) lost its lock {self._uri}, now held by {now}; "
            "stopped, leaving the output to that job"
        )
        LOGGER.error("stembeam: %s", self._lost_message)
        self.lost.set()
        with self._guard:
            if self._running and self._main is not None:
                signal.pthread_kill(self._main, self._signal)

    def check(self) -> None:
        """OutputLost when another job took the lock while this one ran."""
        if self.lost.is_set():
            raise OutputLost(self._lost_message)

    def __exit__(self, *exc) -> None:
        try:
            with self._guard:
                self._running = False
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
        except KeyboardInterrupt:  # the heartbeat's own interruption, arriving as the block ends
            if not self.lost.is_set():
                raise
            self._stop.set()
            self._thread.join()
        if self._previous_handler is not None:
            signal.signal(signal.SIGUSR1, self._previous_handler)
            self._previous_handler = None
        if self.lost.is_set():
            self._lock.close()
            raise OutputLost(self._lost_message)
        self._lock.release()
