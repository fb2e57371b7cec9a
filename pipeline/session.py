"""A job's hold on its output: the output's lock, the sweep of what killed or failed runs left
(before and after), and a private temporary folder for the run."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

from stembeam.model.encode import TEMP_PREFIX
from stembeam.pipeline.output_lock import OutputLock
from stembeam.transforms import storage, workspace


# Folders where Beam file sinks of earlier releases wrote under the output itself (their
# ``beam-temp-*`` folders, left by a killed job, held complete Parquet files: extra rows).
SINK_FOLDERS = ("", "metadata", "features", "evaluation")


def clear_leftovers(output: str) -> None:
    """Remove the staged tables and progress marks (``_work/``, local or gs://), local work files
    (decoded samples), unfinished stem files and Beam's ``beam-temp-*`` folders (also those of an
    earlier, killed run). Called only while the job holds the output's lock."""
    workspace.delete_quietly([workspace.work_root(output)])
    shutil.rmtree(workspace.local_work_dir(output), ignore_errors=True)
    workspace.delete_quietly(storage.list_matching(storage.join(output, "stems"), "*", TEMP_PREFIX + "*"))
    for folder in SINK_FOLDERS:
        workspace.delete_quietly(storage.list_matching(storage.join(output, folder) if folder else output, "beam-temp-*"))


@contextlib.contextmanager
def output_session(output: str, job: str, dry_run: bool = False):
    """Hold ``output`` for one job (refusing while another live job holds it) and sweep what
    killed runs left, before and after; yields the run id. While the job runs, Python's
    temporary folder is one of this run (private_tempdir), removed after it.
    A dry run touches nothing."""
    if dry_run:
        yield None
        return
    with OutputLock(output, job) as lock:
        clear_leftovers(output)
        try:
            with private_tempdir():
                yield lock.run_id
        finally:
            # Also after a failed job: nothing half-written stays (unfinished stems, work files),
            # unless another job took the output over.
            if not lock.lost.is_set():
                clear_leftovers(output)
        lock.check()  # a job whose lock was taken over leaves the output to its new holder


RUN_TEMP_PREFIX = "stembeam-run-"


@contextlib.contextmanager
def private_tempdir():
    """Point Python's temporary folder (``tempfile.tempdir``) at a folder of this run,
    ``$TMPDIR/stembeam-run-<pid>-*``, removed at the end: Beam leaves empty folders there on
    every run (``beam-requirements-cache``, its job server's ``beam-temp*``, the stager's
    ``tmp*``). Such folders of runs whose process is gone (killed) are removed first."""
    base = tempfile.gettempdir()
    sweep_dead_run_tempdirs(base)
    folder = tempfile.mkdtemp(prefix=f"{RUN_TEMP_PREFIX}{os.getpid()}-", dir=base)
    previous = tempfile.tempdir
    tempfile.tempdir = folder
    try:
        yield folder
    finally:
        tempfile.tempdir = previous
        shutil.rmtree(folder, ignore_errors=True)


def sweep_dead_run_tempdirs(base: str) -> None:
    """Remove ``stembeam-run-<pid>-*`` folders under ``base`` whose process is gone."""
    try:
        names = os.listdir(base)
    except OSError:
        return
    for name in names:
        if not name.startswith(RUN_TEMP_PREFIX):
            continue
        pid = name[len(RUN_TEMP_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or _process_alive(int(pid)):
            continue
        shutil.rmtree(os.path.join(base, name), ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process (or not ours to judge)
    return True
