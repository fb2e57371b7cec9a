"""One job at a time per output: a lock file that names the job holding it.

Two jobs writing one output would delete each other's spool and temporaries and interleave
their markers, so a second job refuses to start while the first is alive. A lock left by a
killed job is taken over: on the same host its process is gone; elsewhere (gs:// outputs) its
heartbeat, renewed every minute while the job runs, is older than STALE_AFTER seconds.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid

from transforms import storage

LOCK_FILE = ".stembeam-job.json"
HEARTBEAT = 60.0
STALE_AFTER = 5 * HEARTBEAT


class OutputInUse(SystemExit):
    """Another live job holds the output; the message names it."""


def lock_uri(output: str) -> str:
    return storage.join(output, LOCK_FILE)


def _alive(holder: dict) -> bool:
    if holder.get("host") == socket.gethostname():
        try:
            os.kill(int(holder["pid"]), 0)
        except (ProcessLookupError, ValueError, KeyError, TypeError):
            return False
        except PermissionError:
            return True
        return True
    return time.time() - float(holder.get("heartbeat", 0)) < STALE_AFTER


class OutputLock:
    """``with OutputLock(output, "stembeam pipeline") as lock:`` holds ``{output}/.stembeam-job.json``
    for the job; ``lock.run_id`` names this run."""

    def __init__(self, output: str, job: str):
        self._uri = lock_uri(output)
        self._output = output
        self.run_id = uuid.uuid4().hex[:12]
        self._record = {"job": job, "run_id": self.run_id, "host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
        self._stop = threading.Event()
        self._thread = None

    def _holder(self):
        try:
            return json.loads(storage.read_bytes(self._uri))
        except Exception:  # noqa: BLE001 - missing or half-written: nobody holds it
            return None

    def _write(self) -> None:
        storage.write_bytes_atomic(self._uri, json.dumps({**self._record, "heartbeat": time.time()}).encode("utf-8"))

    def __enter__(self) -> "OutputLock":
        holder = self._holder()
        if holder is not None and holder.get("run_id") != self.run_id and _alive(holder):
            started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(holder.get("started", 0))))
            raise OutputInUse(
                f"{self._output} is in use by {holder.get('job', 'another job')} (run {holder.get('run_id')}, pid {holder.get('pid')} "
                f"on {holder.get('host')}, started {started}); wait for it to end, or delete {self._uri} if that job is gone"
            )
        self._write()
        if self._holder().get("run_id") != self.run_id:
            raise OutputInUse(f"{self._output}: another job took the output at the same moment; run again once it has ended")
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT):
            try:
                self._write()
            except Exception:  # noqa: BLE001 - a missed heartbeat is retried a minute later
                pass

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        holder = self._holder()
        if holder is not None and holder.get("run_id") == self.run_id:
            storage.delete_matching(self._uri)
