"""The output lock (pipeline/output_lock.py): one holder at a time, also for jobs started at the
same instant; a dead job's lock is taken over; the heartbeat renews only this job's own lock.

Local outputs: an flock on ``{output}/.stembeam-job.json``. gs:// outputs: generation
preconditions, tested against gcp-storage-emulator, which ignores ``ifGenerationMatch``
(a second create with ``if_generation_match=0`` succeeds there): ``locks`` below makes the
emulator honour the precondition on uploads, downloads and deletes, as GCS documents it
(412 when the live generation differs, ``0`` meaning "no live object")."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO

TRIALS = 50
HOLD = 0.25  # seconds a winner keeps the lock: far longer than the two starts differ
PERIOD = 0.45  # seconds between trials' start times
IN_STEP = 0.1  # seconds: both attempts that close to the trial's start make a race

# Both processes import everything, say they are ready, then wait for the go file that holds
# the common start time t0; trial i starts at t0 + i * PERIOD in both (a spin on the clock at
# the end, so the two starts are within a few microseconds).
RACER = r"""
import json, os, sys, time
from stembeam.pipeline.output_lock import OutputInUse, OutputLock

base, name, outputs, trials, hold, period = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
with OutputLock(outputs.rstrip("/") + "/warm-up-" + name, name):  # clients made, credentials looked up
    pass
open(os.path.join(base, "ready-" + name), "w").close()
go = os.path.join(base, "go")
while not os.path.exists(go):
    time.sleep(0.001)
time.sleep(0.01)
t0 = float(open(go).read())
results = []
for trial in range(trials):
    start = t0 + trial * period
    while time.time() < start - 0.005:
        time.sleep(0.001)
    while time.time() < start:
        pass
    output = outputs.rstrip("/") + "/out%03d" % trial
    late = time.time() - start
    try:
        with OutputLock(output, name) as lock:
            got = time.time()
            time.sleep(hold)
            results.append({"trial": trial, "held": [got, time.time()], "late": late, "run_id": lock.run_id})
    except OutputInUse as refused:
        results.append({"trial": trial, "refused": str(refused), "late": late})
    except Exception as error:
        results.append({"trial": trial, "error": repr(error), "late": late})
with open(os.path.join(base, "result-" + name + ".json"), "w") as handle:
    json.dump(results, handle)
"""


def _race(tmp_path, outputs, env=None):
    """Two processes take the lock of TRIALS fresh outputs at the same instants: the trials
    where both held it at once, and the number of holders of each trial where both tried
    within IN_STEP seconds of the start (a process descheduled longer is no race)."""
    base = tmp_path / "race"
    base.mkdir()
    names = ("job-a", "job-b")
    procs = [
        subprocess.Popen([sys.executable, "-c", RACER, str(base), name, outputs, str(TRIALS), str(HOLD), str(PERIOD)], cwd=REPO, env=env or os.environ.copy())
        for name in names
    ]
    deadline = time.time() + 120
    while not all((base / f"ready-{name}").exists() for name in names):
        assert time.time() < deadline and all(p.poll() is None for p in procs), "the racers did not start"
        time.sleep(0.01)
    (base / "go.tmp").write_text(repr(time.time() + 0.5))
    os.replace(base / "go.tmp", base / "go")
    for proc in procs:
        assert proc.wait(timeout=TRIALS * PERIOD + 120) == 0
    results = {name: json.loads((base / f"result-{name}.json").read_text()) for name in names}
    both, outcomes = [], {}
    for trial in range(TRIALS):
        rows = {name: results[name][trial] for name in names}
        assert not [row["error"] for row in rows.values() if "error" in row], rows
        held = [rows[name]["held"] for name in names if "held" in rows[name]]
        if max(row["late"] for row in rows.values()) < IN_STEP:
            outcomes[trial] = len(held)
        if len(held) == 2 and max(h[0] for h in held) < min(h[1] for h in held):
            both.append(trial)
    assert len(outcomes) >= TRIALS - 5, f"only {len(outcomes)} of {TRIALS} trials raced: the machine is too busy"
    return both, outcomes, results


def _record(**fields):
    holder = {"job": "stembeam pipeline", "run_id": "abc123", "host": socket.gethostname(), "pid": os.getpid(), "started": time.time(), "heartbeat": time.time()}
    holder.update(fields)
    return holder


def _dead_pid() -> int:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    return int(dead.stdout)


# ---------------------------------------------------------------------------------------------
# local outputs


def test_two_jobs_starting_at_the_same_instant_never_both_hold_a_local_output(tmp_path):
    """50 trials of two processes taking one fresh output's lock at the same instant: exactly
    one holds it each time, the other is refused naming it (or the race)."""
    both, outcomes, results = _race(tmp_path, str(tmp_path / "outputs"))
    assert not both, f"both jobs held the lock in {len(both)} of {TRIALS} trials: {both}"
    assert set(outcomes.values()) == {1}, outcomes  # one holder, the other refused
    for row in results["job-a"] + results["job-b"]:
        if "refused" in row:
            assert "is in use by job-" in row["refused"] or "at the same moment" in row["refused"]
    assert not [p for p in (tmp_path / "outputs").rglob(".stembeam-job.json")]  # every winner released its lock


def test_a_stale_local_lock_is_taken_over_and_a_live_one_is_not(tmp_path):
    """A lock file naming a dead pid of this host, or another host's job whose heartbeat is
    older than STALE_AFTER, is taken over; a live pid of this host, or another host's fresh
    heartbeat, refuses the job with a message naming the holder."""
    from stembeam.pipeline.output_lock import LOCK_FILE, STALE_AFTER, OutputInUse, OutputLock

    output = tmp_path / "out"
    output.mkdir()
    lock_file = output / LOCK_FILE
    for stale in (_record(pid=_dead_pid()), _record(host="elsewhere.example", heartbeat=time.time() - STALE_AFTER - 5)):
        lock_file.write_text(json.dumps(stale))
        with OutputLock(str(output), "stembeam pipeline") as lock:
            held = json.loads(lock_file.read_text())
            assert held["run_id"] == lock.run_id and held["pid"] == os.getpid()
            assert {"job", "run_id", "host", "pid", "started", "heartbeat"} <= set(held)
        assert not lock_file.exists()
    for live, where in ((_record(), f"pid {os.getpid()} on {socket.gethostname()}"), (_record(host="elsewhere.example", pid=1), "pid 1 on elsewhere.example")):
        lock_file.write_text(json.dumps(live))
        with pytest.raises(OutputInUse, match=f"is in use by stembeam pipeline \\(run abc123, {where}"):
            with OutputLock(str(output), "stembeam evaluate"):
                pass
        assert json.loads(lock_file.read_text()) == live  # untouched


HOLDER = r"""
import sys, time
from stembeam.pipeline import output_lock
output_lock.HEARTBEAT = float(sys.argv[2])
with output_lock.OutputLock(sys.argv[1], "stembeam pipeline") as lock:
    print(lock.run_id, flush=True)
    for _ in range(600):
        time.sleep(0.1)
"""


def _holder(output, heartbeat=60.0, env=None):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, output, str(heartbeat)], cwd=REPO, env=env or os.environ.copy(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_id = proc.stdout.readline().strip()
    assert run_id, proc.stderr.read()
    return proc, run_id


def test_a_killed_jobs_local_lock_is_taken_over_at_once(tmp_path):
    """SIGKILL leaves the lock file behind (nothing ran to remove it); the next job takes it at
    once, not after STALE_AFTER. While the job lived, another was refused."""
    from stembeam.pipeline.output_lock import LOCK_FILE, OutputInUse, OutputLock

    output = str(tmp_path / "out")
    proc, run_id = _holder(output)
    with pytest.raises(OutputInUse, match=f"run {run_id}, pid {proc.pid}"):
        with OutputLock(output, "stembeam evaluate"):
            pass
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads((tmp_path / "out" / LOCK_FILE).read_text())["run_id"] == run_id
    with OutputLock(output, "stembeam evaluate") as lock:
        assert json.loads((tmp_path / "out" / LOCK_FILE).read_text())["run_id"] == lock.run_id


def _read_json(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # being rewritten
        return None


def _ended(proc, timeout=20.0) -> tuple:
    """``(exit code or None when it had to be killed, stderr)`` of a lock holder told to stop."""
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = None
    return code, proc.stderr.read()


def _wait_for(predicate, timeout=30.0):
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline
        time.sleep(0.02)


def test_the_heartbeat_renews_only_its_own_local_lock(tmp_path):
    """The holder's lock file is deleted by hand and another job takes the output: the first
    job's heartbeat (every 0.1 s here) must not overwrite the new lock; it logs the loss and
    stops, naming the new holder, and leaves the new lock in place."""
    from stembeam.pipeline.output_lock import LOCK_FILE

    output = tmp_path / "out"
    lock_file = output / LOCK_FILE
    proc, run_id = _holder(str(output), heartbeat=0.1)
    first = json.loads(lock_file.read_text())["heartbeat"]
    _wait_for(lambda: (_read_json(lock_file) or {}).get("heartbeat", first) != first)  # it beats
    other = _record(run_id="other1", job="stembeam evaluate")
    lock_file.unlink()
    lock_file.write_text(json.dumps(other))
    code, stderr = _ended(proc)
    assert json.loads(lock_file.read_text()) == other, "the heartbeat overwrote another job's lock"
    assert code == 1, stderr
    assert "stembeam evaluate (run other1" in stderr and "lost" in stderr


# ---------------------------------------------------------------------------------------------
# gs:// outputs (gcp-storage-emulator, made to honour generation preconditions)


def _honour_preconditions(monkeypatch):
    """Make the emulator answer 412 when ``ifGenerationMatch`` differs from the live object's
    generation (``0``: no live object) on uploads, downloads, metadata reads and deletes."""
    from http import HTTPStatus

    from gcp_storage_emulator import server
    from gcp_storage_emulator.exceptions import NotFound
    from gcp_storage_emulator.handlers import objects

    def guarded(handler):
        def run(request, response, storage, *args, **kwargs):
            wanted = request.query.get("ifGenerationMatch")
            if wanted:
                name = request.params.get("object_id")
                if name is None:
                    name = request.query["name"][0] if "name" in request.query else request.data["meta"].get("name")
                try:
                    live = str(storage.get_file_obj(request.params["bucket_name"], name)["generation"])
                except NotFound:
                    live = "0"
                if live != wanted[0]:
                    response.status = HTTPStatus.PRECONDITION_FAILED
                    response.json({"error": {"code": 412, "message": "conditionNotMet"}})
                    return None
            return handler(request, response, storage, *args, **kwargs)

        return run

    wrapped = {objects.insert, objects.delete, objects.download, objects.get}
    for _, handlers in server.HANDLERS:
        for method, handler in list(handlers.items()):
            if handler in wrapped:
                monkeypatch.setitem(handlers, method, guarded(handler))


@pytest.fixture
def locks(gcs, monkeypatch):
    """The emulator (conftest's ``gcs``) honouring generation preconditions for this test, with
    an empty bucket ``locks``: ``(client, environment for subprocesses)``."""
    from google.api_core import exceptions

    _honour_preconditions(monkeypatch)
    client, env = gcs
    bucket = client.lookup_bucket("locks") or client.create_bucket("locks")
    for blob in client.list_blobs("locks"):
        blob.delete()
    bucket.blob("probe").upload_from_string(b"1", if_generation_match=0)
    with pytest.raises(exceptions.PreconditionFailed):  # the shim works
        bucket.blob("probe").upload_from_string(b"2", if_generation_match=0)
    bucket.blob("probe").delete()
    return client, env


def _gcs_lock(client, output):
    blob = client.bucket("locks").get_blob(output[len("gs://locks/"):] + "/.stembeam-job.json")
    return None if blob is None else json.loads(blob.download_as_bytes())


def test_two_jobs_starting_at_the_same_instant_never_both_hold_a_gcs_output(locks, tmp_path):
    client, env = locks
    both, outcomes, results = _race(tmp_path, "gs://locks/outputs", env)
    assert not both, f"both jobs held the lock in {len(both)} of {TRIALS} trials: {both}"
    assert set(outcomes.values()) == {1}, outcomes  # one holder, the other refused
    assert not [b.name for b in client.list_blobs("locks", prefix="outputs/")]  # every winner released its lock


def test_a_stale_gcs_lock_is_taken_over_and_a_live_one_is_not(locks):
    from stembeam.pipeline.output_lock import STALE_AFTER, OutputInUse, OutputLock

    client, _ = locks
    output = "gs://locks/out"
    blob = client.bucket("locks").blob("out/.stembeam-job.json")
    for stale in (_record(pid=_dead_pid()), _record(host="elsewhere.example", heartbeat=time.time() - STALE_AFTER - 5)):
        blob.upload_from_string(json.dumps(stale))
        with OutputLock(output, "stembeam pipeline") as lock:
            assert _gcs_lock(client, output)["run_id"] == lock.run_id
        assert _gcs_lock(client, output) is None
    live = _record(host="elsewhere.example", pid=1)
    blob.upload_from_string(json.dumps(live))
    with pytest.raises(OutputInUse, match="is in use by stembeam pipeline \\(run abc123, pid 1 on elsewhere.example"):
        with OutputLock(output, "stembeam evaluate"):
            pass
    assert _gcs_lock(client, output) == live


def test_the_heartbeat_renews_only_its_own_gcs_lock(locks):
    """Another job's lock replaces this job's object (a takeover after this job's heartbeats
    failed for STALE_AFTER): the heartbeat's precondition fails, it never overwrites the new
    lock; the job stops naming the new holder, and its exit leaves the new lock in place."""
    client, env = locks
    output = "gs://locks/beating"
    proc, run_id = _holder(output, heartbeat=0.1, env=env)
    first = _gcs_lock(client, output)
    assert first["run_id"] == run_id
    _wait_for(lambda: _gcs_lock(client, output)["heartbeat"] != first["heartbeat"])  # it beats
    other = _record(run_id="other1", host="elsewhere.example", job="stembeam evaluate")
    client.bucket("locks").blob("beating/.stembeam-job.json").delete()
    client.bucket("locks").blob("beating/.stembeam-job.json").upload_from_string(json.dumps(other))
    code, stderr = _ended(proc)
    assert _gcs_lock(client, output) == other, "the heartbeat overwrote another job's lock"
    assert code == 1, stderr
    assert "stembeam evaluate (run other1" in stderr and "lost" in stderr
