"""Local-or-remote file helpers over Beam FileSystems (local paths and gs:// alike)."""
from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile

from apache_beam.io.filesystems import FileSystems

from model.audio import apply_default_mode


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def local_path(uri: str) -> str:
    """The filesystem path of a local uri (``file://`` stripped)."""
    return uri[len("file://") :] if uri.startswith("file://") else uri


def join(*parts: str) -> str:
    return FileSystems.join(*parts)


@contextlib.contextmanager
def local_copy(uri: str):
    """A local path holding ``uri``'s bytes (the path itself when already local)."""
    if is_local(uri):
        yield local_path(uri)
        return
    suffix = os.path.splitext(uri)[1]
    with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:
        with FileSystems.open(uri) as source:
            shutil.copyfileobj(source, tmp)
        tmp.flush()
        yield tmp.name


def put_file(local_path: str, uri: str) -> None:
    """Copy a finished local file to ``uri`` (remote objects appear whole on close)."""
    with open(local_path, "rb") as source, FileSystems.create(uri) as target:
        shutil.copyfileobj(source, target)


def write_bytes_atomic(uri: str, data: bytes) -> None:
    """Write ``data`` at ``uri``; local files via a temporary name and a rename."""
    if is_local(uri):
        folder = os.path.dirname(os.path.abspath(uri))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        apply_default_mode(tmp)
        os.replace(tmp, uri)
    else:
        with FileSystems.create(uri) as handle:
            handle.write(data)


def read_bytes(uri: str) -> bytes:
    with FileSystems.open(uri) as handle:
        return handle.read()


def matching(pattern: str) -> list:
    """Sorted paths matching a glob (``*`` stays within one folder), local or remote. Local
    globs follow symlinked folders (Beam's local match walks the tree without them)."""
    if is_local(pattern):
        return sorted(glob.glob(local_path(pattern)))
    return sorted(m.path for result in FileSystems.match([pattern]) for m in result.metadata_list)


def delete_matching(*patterns: str) -> None:
    """Delete every file matching any of the globs (local or remote)."""
    found = [path for pattern in patterns for path in matching(pattern)]
    if found:
        FileSystems.delete(found)


def _private_folder(path: str) -> str:
    """``path`` as a folder only this user can enter (0700), refusing one owned by another user."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    info = os.stat(path)
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise PermissionError(f"{path}: owned by uid {info.st_uid}, not by this user; remove it or set $STEMBEAM_CACHE")
    if info.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def cached_folder(uri: str) -> tuple:
    """``(local folder, [(remote path, size, update time), ...])``: a local copy of the files
    directly in the remote folder ``uri`` (e.g. a gs:// model), kept in the user's private
    cache (``$STEMBEAM_CACHE/remote/``, 0700) and fetched again when a file's size or update
    time changed, and the remote listing it was made from."""
    import hashlib
    import json

    from model.resolve import cache_dir

    root = _private_folder(os.path.join(cache_dir(), "remote"))
    local = os.path.join(root, hashlib.sha1(uri.encode("utf-8")).hexdigest()[:16])
    found = [m for result in FileSystems.match([join(uri, "*")]) for m in result.metadata_list]
    if not found:
        raise FileNotFoundError(f"{uri}: no files found")
    files = sorted((m.path, m.size_in_bytes, m.last_updated_in_seconds) for m in found)
    listing = json.dumps(files)
    stamp = os.path.join(local, ".stembeam-listing.json")
    if os.path.exists(stamp) and open(stamp, encoding="utf-8").read() == listing:
        return local, files
    # Files the remote folder no longer has must not linger in the copy.
    shutil.rmtree(local, ignore_errors=True)
    os.makedirs(local, mode=0o700, exist_ok=True)
    for meta in found:
        target = os.path.join(local, meta.path.rstrip("/").rsplit("/", 1)[-1])
        with FileSystems.open(meta.path) as source, open(target + ".part", "wb") as handle:
            shutil.copyfileobj(source, handle)
        os.replace(target + ".part", target)
    write_bytes_atomic(stamp, listing.encode("utf-8"))
    return local, files
