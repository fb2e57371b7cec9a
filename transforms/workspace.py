"""A job's work space: ``{output}/_work/`` (progress marks, staged tables; local or gs://) and
the local folder of each track in flight (its decoded samples; a gs:// output's stems before
their upload). Each track's files go as soon as it is written; what a killed job left is swept
by the next run on the output (pipeline/session.py clear_leftovers).
"""
from __future__ import annotations

import hashlib
import os
import stat
import tempfile

from stembeam.transforms import storage

WORK = "_work"


def work_root(output: str) -> str:
    """``{output}/_work``: the job's scratch space under its output."""
    return storage.join(output, WORK)


def local_work_dir(output: str, create: bool = False) -> str:
    """A local folder for decoded samples and staged stems.

    Private like the model cache: folders of this user, mode 0700 (a looser one is made 0700),
    as their names are predictable in a shared temporary space. The next run on the output
    sweeps it (clear_leftovers), so a killed job leaves nothing behind for long.

    Args:
        output: the job's output folder.
        create: make the folder (callers about to write in it); else only an existing one is
            checked.
    Returns:
        ``{output}/_work/...`` for a local output; for a remote one,
        ``$TMPDIR/stembeam-work-<uid>/<16 hex digits of the output's sha1>``.
    Raises:
        PermissionError: a folder owned by another user, or a symbolic link.
    """
    if storage.is_local(output):
        path = os.path.join(storage.local_path(work_root(output)), "local")
        if create:
            os.makedirs(path, exist_ok=True)
        return path
    owner = f"-{os.getuid()}" if hasattr(os, "getuid") else ""
    root = _private_work_folder(os.path.join(tempfile.gettempdir(), "stembeam-work" + owner), create)
    return _private_work_folder(os.path.join(root, hashlib.sha1(output.encode("utf-8")).hexdigest()[:16]), create)


def _private_work_folder(path: str, create: bool) -> str:
    """``path`` as a folder only this user can enter (0700); refused when it is another user's,
    a symbolic link or not a folder."""
    if create:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        if create:
            raise
        return path
    if not stat.S_ISDIR(info.st_mode):
        kind = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a folder"
        raise PermissionError(f"{path}: the local work folder is {kind}; remove it or set $TMPDIR to another folder")
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise PermissionError(f"{path}: the local work folder is owned by uid {info.st_uid}, not by this user; remove it or set $TMPDIR to another folder")
    if info.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def delete_quietly(uris) -> None:
    """Remove files or folders (gs://: the prefix ``uri/`` too, where FileSystems.exists sees
    nothing); ones already gone are fine; never a glob."""
    try:
        storage.delete([uri for uri in uris if uri])
    except Exception:  # noqa: BLE001 - a leftover is removed again at the end of the job
        pass
