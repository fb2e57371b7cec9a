"""Decode worker processes: every native decoder runs in one, so that a file that makes a
decoder crash (SIGFPE, SIGSEGV), loop or swell becomes that file's error, never the caller's.

A worker (``python -m stembeam.model.decode_worker``) reads one JSON request per line on its
standard input, probes the file (model.decoders.probe) and answers with what it claims, then
decodes it into the raw file the request names and answers with what was decoded. The caller
(``WorkerPool``) gives each decode a deadline proportional to the claimed length and a cap on
the worker's memory growth (model.decoders.DecodeLimits), and kills the worker, with the
ffmpeg it may have started, when either is exceeded; the next decode gets a new worker.

Workers that only need libsndfile and ffmpeg start in a fraction of a second; tensorflow-io
(MP3, Ogg/Vorbis) needs TensorFlow, so it has one worker of its own per process, used by one
decode at a time. It imports tensorflow-io as it starts (about 4 s of one core): started the
first time such a file comes, or earlier by ``start_tfio_worker`` when a caller knows such files
are coming (the corpus launcher, ``stembeam separate``), so the import overlaps the model's load.
"""
from __future__ import annotations

import atexit
import dataclasses
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Optional

from stembeam.model.decoders import TFIO, AudioDecodeError, Claim, DecodeRequest, Decoded

# How often a waiting caller looks at the worker's memory (seconds).
_POLL_S = 0.2


class _FileSink:
    def __init__(self, path: str):
        self._handle = open(path, "wb")

    def reset(self):
        self._handle.seek(0)
        self._handle.truncate()

    def write(self, block):
        self._handle.write(block.tobytes())

    def close(self):
        self._handle.close()


def _serve(requests, answer) -> None:
    """The worker's loop: one request per line of ``requests``, answers through ``answer``."""
    from stembeam.model import decoders

    for line in requests:
        message = json.loads(line)
        request = DecodeRequest.from_json(message["request"])
        try:
            decoders.check_readable(request.path)
            claim = decoders.probe(request.path, request.stream)
            decoders.check_limits(request.path, claim, request)
            route = decoders.route(claim, request)
            needs_tfio = TFIO in route and not message["tfio"]
            answer({"claim": dataclasses.asdict(claim), "needs_tfio": needs_tfio})
            if needs_tfio:
                continue
            sink = _FileSink(message["raw"])
            try:
                decoded = decoders.decode_claimed(request, claim, sink)
            finally:
                sink.close()
            answer({"decoded": dataclasses.asdict(decoded)})
        except AudioDecodeError as error:
            answer({"error": error.reason})
        except OSError as error:
            answer({"oserror": [error.errno, error.strerror or str(error), error.filename and str(error.filename)]})
        except Exception as error:  # noqa: BLE001 - any other failure is this file's, reported
            answer({"error": f"the decoder failed: {type(error).__name__}: {error}"})


def _exit_with_parent(parent: int) -> None:
    """End this worker when the process that started it is gone (a killed job)."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(1)


def main() -> None:
    """Run as a worker: requests on stdin, answers on the original stdout. Anything a native
    library prints on stdout goes to stderr instead, so it cannot corrupt the answers."""
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    if "--tfio" in sys.argv[1:]:
        try:
            import tensorflow_io  # noqa: F401 - loaded before the first request, not during it
        except Exception:  # noqa: BLE001 - the decode that needs it reports the failure
            pass

    def answer(message: dict) -> None:
        answers.write(json.dumps(message) + "\n")

    _serve(sys.stdin, answer)


# --- the caller's side ----------------------------------------------------------------------------


class _Worker:
    """One worker process and the pipe to it."""

    def __init__(self, tfio: bool):
        self.tfio = tfio
        env = dict(os.environ)
        # The worker imports the same stembeam as this process, whatever put it on the path.
        env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) if p else os.getcwd() for p in sys.path)
        env["TF_CPP_MIN_LOG_LEVEL"] = "3"  # its own log; TensorFlow loads only for tensorflow-io
        env["CUDA_VISIBLE_DEVICES"] = ""  # decoding needs no GPU; never take one from the job
        env["PYTHONWARNINGS"] = "ignore"
        self._errors = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "stembeam.model.decode_worker", *(["--tfio"] if tfio else [])], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._errors,
            env=env, start_new_session=True, close_fds=True,
        )
        self._buffer = b""

    def send(self, message: dict) -> None:
        self.process.stdin.write((json.dumps(message) + "\n").encode("utf-8"))
        self.process.stdin.flush()

    def receive(self, seconds: float, limits, path: str) -> dict:
        """The worker's next answer; AudioDecodeError naming ``path`` when it dies, takes more than
        ``seconds`` or grows by more than ``limits.max_memory_mb``."""
        deadline = time.monotonic() + seconds
        start_rss = _rss_mb(self.process.pid)
        stdout = self.process.stdout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise AudioDecodeError(path, f"decoding did not finish within {seconds:.0f} s: stopped (a damaged file?)")
            ready, _, _ = select.select([stdout], [], [], min(left, _POLL_S))
            if ready:
                data = os.read(stdout.fileno(), 1 << 16)
                if not data:
                    raise AudioDecodeError(path, f"the decoder crashed on it ({self._death()})")
                self._buffer += data
            rss = _rss_mb(self.process.pid)
            if start_rss is not None and rss is not None and rss - start_rss > limits.max_memory_mb:
                self.kill()
                raise AudioDecodeError(path, f"the decoder used more than {limits.max_memory_mb} MB more memory on it: stopped (a damaged file?)")
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def _death(self) -> str:
        code = self.process.wait()
        self.kill()
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit code {code}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """Stop the worker and whatever it started (its ffmpeg)."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass
        self._errors.close()

    def close(self) -> None:
        """Let an idle worker end (end of its input)."""
        try:
            self.process.stdin.close()
        except OSError:
            pass


def _raise_error(answer: dict, path: str) -> None:
    """The worker's error answer as the caller's exception: AudioDecodeError for the file's
    own problems, OSError (a full disk...) for the machine's."""
    if "error" in answer:
        raise AudioDecodeError(path, answer["error"])
    if "oserror" in answer:
        code, reason, filename = answer["oserror"]
        where = os.path.dirname(filename) if filename else "its work folder"
        raise OSError(code, f"decoding {path} into {where}: {reason}")


def _rss_mb(pid: int) -> Optional[float]:
    """Resident memory of ``pid`` in MB (Linux); None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        return None
    return None


class WorkerPool:
    """Decode workers of this process: idle light workers reused by any thread, one
    tensorflow-io worker used by one decode at a time."""

    def __init__(self):
        self._lock = threading.Lock()
        self._idle = []
        self._tfio = None
        self._tfio_lock = threading.Lock()

    def decode(self, request: DecodeRequest, raw_path: str) -> tuple:
        """Decode a request into a file in a worker process.

        Args:
            request: DecodeRequest.
            raw_path: the file to write: interleaved stereo float32, ``[samples, 2]`` row after row.
        Returns:
            ``(Decoded, Claim)``.
        Raises:
            AudioDecodeError naming the file and the reason (a worker that crashed, looped or grew
            past the limits included).
        """
        worker = self._take()
        try:
            answer, claim = self._run(worker, request, raw_path, tfio=False)
        finally:
            self._give_back(worker)
        if answer.get("needs_tfio"):
            with self._tfio_lock:
                self._start_tfio()
                answer, claim = self._run(self._tfio, request, raw_path, tfio=True)
        return Decoded(**{**answer["decoded"], "warnings": tuple(answer["decoded"]["warnings"])}), claim

    def start_tfio(self) -> None:
        """Start the tensorflow-io worker now, if it is not running (returns at once; the worker
        imports tensorflow-io in the background)."""
        with self._tfio_lock:
            self._start_tfio()

    def _start_tfio(self) -> None:
        if self._tfio is None or not self._tfio.alive():
            self._tfio = _Worker(tfio=True)

    def _run(self, worker: _Worker, request: DecodeRequest, raw_path: str, tfio: bool) -> tuple:
        limits = request.limits
        try:
            worker.send({"request": request.to_json(), "raw": raw_path, "tfio": tfio})
            first = worker.receive(limits.deadline_s, limits, request.path)
            _raise_error(first, request.path)
            claim = Claim(**{**first["claim"], "notes": tuple(first["claim"]["notes"])})
            if first.get("needs_tfio"):
                return first, claim
            answer = worker.receive(limits.deadline(claim.seconds), limits, request.path)
            _raise_error(answer, request.path)
            return answer, claim
        except AudioDecodeError:
            raise  # the worker answered (and serves the next file), or was stopped
        except BaseException:
            worker.kill()  # interrupted mid-answer: its pipe holds a stale message
            raise

    def _take(self) -> _Worker:
        with self._lock:
            while self._idle:
                worker = self._idle.pop()
                if worker.alive():
                    return worker
        return _Worker(tfio=False)

    def _give_back(self, worker: _Worker) -> None:
        if worker.alive():
            with self._lock:
                self._idle.append(worker)

    def close(self) -> None:
        """End every worker of the pool."""
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle + ([self._tfio] if self._tfio else []):
            worker.kill()
        self._tfio = None


_POOL = None
_POOL_LOCK = threading.Lock()


def pool() -> WorkerPool:
    """This process's decode workers (started on first use; they end with the process)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = WorkerPool()
            atexit.register(_POOL.close)  # stembeam's own processes, ended with the caller's
        return _POOL


# Files whose decoder is tensorflow-io (model.decoders.route: MP3 and Ogg/Vorbis, by content;
# the name is only a hint of what is coming).
TFIO_SUFFIXES = (".mp3", ".ogg", ".oga")


def start_tfio_worker(uris) -> bool:
    """Start this process's tensorflow-io worker now when any of ``uris`` looks like a file it
    decodes (an MP3 or Ogg name), so its start-up overlaps the caller's. Returns whether it did."""
    if not any(str(uri).lower().endswith(TFIO_SUFFIXES) for uri in uris):
        return False
    pool().start_tfio()
    return True


if __name__ == "__main__":
    main()
