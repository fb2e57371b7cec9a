"""Local-or-remote file helpers over Beam FileSystems (local paths and gs:// alike)."""
from __future__ import annotations

import contextlib
import errno
import fnmatch
import os
import shutil
import tempfile

from apache_beam.io.filesystems import FileSystems

from stembeam._compat import beam_gcsio, beam_list_prefix

from stembeam.model.encode import apply_default_mode


def is_local(uri: str) -> bool:
    """Whether ``uri`` is a local path (no scheme, or ``file://``)."""
    return "://" not in uri or uri.startswith("file://")


def local_path(uri: str) -> str:
    """The filesystem path of a local uri (``file://`` stripped)."""
    return uri[len("file://") :] if uri.startswith("file://") else uri


def join(*parts: str) -> str:
    """Join uri parts (Beam's FileSystems.join: local paths or any Beam filesystem)."""
    return FileSystems.join(*parts)


@contextlib.contextmanager
def local_copy(uri: str):
    """A context manager giving a local path holding ``uri``'s bytes (the path itself when already
    local; a temporary copy, removed on exit, for a remote one).
    """
    if is_local(uri):
        yield local_path(uri)
        return
    suffix = os.path.splitext(uri)[1]
    with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:
        with FileSystems.open(uri) as source:
            shutil.copyfileobj(source, tmp)
        tmp.flush()
        yield tmp.name


def read_parquet(uri: str, columns=None):
    """Read a Parquet file (local or any Beam filesystem) as a pyarrow Table.

    Remote bytes are copied into memory pyarrow owns: a Table read from Python-owned bytes (a
    BytesIO) can be released by one of pyarrow's threads during interpreter shutdown, which
    then aborts the process ("terminate called without an active exception").

    Args:
        uri: the file.
        columns: only these columns (None: all).
    Returns:
        pyarrow.Table.
    """
    if is_local(uri):
        import pyarrow.parquet as pq

        return pq.read_table(local_path(uri), columns=columns)
    return parquet_from_bytes(read_bytes(uri), columns)


def parquet_from_bytes(data: bytes, columns=None):
    """A Parquet file's ``data`` as a pyarrow Table, read from memory pyarrow owns (see read_parquet)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    owned = pa.allocate_buffer(len(data))
    np.frombuffer(owned, dtype=np.uint8)[:] = np.frombuffer(data, dtype=np.uint8)
    return pq.read_table(pa.BufferReader(owned), columns=columns)


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
    """The bytes of the file at ``uri`` (local or any Beam filesystem)."""
    with FileSystems.open(uri) as handle:
        return handle.read()


GLOB_CHARS = frozenset("*?[")


def has_glob(uri: str) -> bool:
    """Whether ``uri`` holds a character a glob (FileSystems.match, Beam's file sinks) reads as a
    pattern: such a path must only ever be used literally."""
    return any(char in GLOB_CHARS for char in uri)


def _gcs(uri: str):
    """Beam's GcsIO for a gs:// uri (None for other schemes)."""
    if not uri.startswith("gs://"):
        return None
    return beam_gcsio(uri)  # the literal calls (get, list by prefix, delete one)


def _not_found(error: Exception) -> bool:
    details = getattr(error, "exception_details", None) or {}
    causes = [error, *details.values()]
    return any(isinstance(cause, FileNotFoundError) or type(cause).__name__ == "NotFound" for cause in causes)


def exists(uri: str) -> bool:
    """Whether a file (locally also a folder) is at exactly ``uri``: never a pattern."""
    if is_local(uri):
        return os.path.exists(local_path(uri))
    return FileSystems.exists(uri)  # literal: GCS asks for that one object


def stat(uri: str) -> tuple:
    """``(size, modification time)`` of the file at exactly ``uri`` (gs://: the object's update
    time, which each new generation changes); FileNotFoundError naming ``uri`` when none."""
    if is_local(uri):
        try:
            info = os.stat(local_path(uri))
        except FileNotFoundError:
            raise FileNotFoundError(f"{uri}: file not found") from None
        return info.st_size, info.st_mtime
    try:
        meta = FileSystems.get_filesystem(uri).metadata(uri)  # literal (GCS: gcsio._status)
    except Exception as error:  # noqa: BLE001 - Beam wraps the cause in a BeamIOError
        if _not_found(error):
            raise FileNotFoundError(f"{uri}: file not found") from None
        raise
    return meta.size_in_bytes, meta.last_updated_in_seconds


def delete(uris) -> None:
    """Remove each file or folder (recursively) at exactly these uris; missing ones are fine.
    gs://: the object itself and every object under the prefix ``uri/``, never a glob."""
    for uri in [u for u in uris if u]:
        if is_local(uri):
            path = local_path(uri)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, onerror=_gone_is_fine)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            continue
        gcs = _gcs(uri)
        if gcs is not None:
            if not uri.endswith("/"):
                gcs.delete(uri)  # one object; a missing one is fine
            gcs.delete(uri.rstrip("/") + "/", recursive=True)  # listed by prefix, literally
            continue
        # Another remote filesystem: its files found by prefix listing, deleted by name.
        found = [m.path for m in _listing(uri.rstrip("/") + "/")]
        if FileSystems.exists(uri):
            found.append(uri)
        if found:
            FileSystems.delete(found)


def _gone_is_fine(function, path, exc_info) -> None:
    if not isinstance(exc_info[1], FileNotFoundError):
        raise exc_info[1]


def _listing(prefix: str):
    """FileMetadata of every object whose name starts with ``prefix`` (remote, one listing)."""
    return beam_list_prefix(prefix)


def _segment_match(name: str, pattern: str) -> bool:
    # As glob: a wildcard does not match a leading dot unless the pattern starts with one.
    if name.startswith(".") and not pattern.startswith("."):
        return False
    return fnmatch.fnmatchcase(name, pattern)


def list_matching(folder: str, *patterns: str) -> list:
    """List a folder taken literally, matching patterns below it.

    Local listings follow symlinked folders (as glob does) and give files and folders; gs:// is
    one listing by the prefix ``folder/``, its "folders" being the prefixes of deeper objects.

    Args:
        folder: the folder, used as it is (brackets and stars included).
        *patterns: one fnmatch pattern per path component below it:
            ``list_matching(out, "*", "*.npy")`` is ``out/*/*.npy``.
    Returns:
        Sorted uris.
    """
    if not patterns:
        return [folder] if exists(folder) else []
    if is_local(folder):
        found = [local_path(folder)]
        for depth, pattern in enumerate(patterns):
            last = depth == len(patterns) - 1
            deeper = []
            for parent in found:
                try:
                    entries = list(os.scandir(parent))
                except (FileNotFoundError, NotADirectoryError, PermissionError):
                    continue
                for entry in entries:
                    if _segment_match(entry.name, pattern) and (last or entry.is_dir()):
                        deeper.append(os.path.join(parent, entry.name))
            found = deeper
        if folder.startswith("file://"):
            return sorted("file://" + path for path in found)
        return sorted(found)
    prefix = folder.rstrip("/") + "/"
    # The first pattern's literal start narrows the listing (``beam-temp-*``: only those objects).
    literal = patterns[0][: min((patterns[0].find(c) for c in GLOB_CHARS if c in patterns[0]), default=len(patterns[0]))]
    found = set()
    for meta in _listing(prefix + literal):
        parts = meta.path[len(prefix):].split("/")
        if len(parts) < len(patterns) or not all(parts[: len(patterns)]):
            continue
        if all(_segment_match(part, pattern) for part, pattern in zip(parts, patterns)):
            found.add(prefix + "/".join(parts[: len(patterns)]))
    return sorted(found)


def list_files(folder: str) -> list:
    """``[(uri, size, modification time), ...]`` of the files directly in the literal ``folder``
    (remote: one listing by its prefix), sorted."""
    if is_local(folder):
        files = []
        for uri in list_matching(folder, "*"):
            if os.path.isfile(local_path(uri)):
                size, mtime = stat(uri)
                files.append((uri, size, mtime))
        return sorted(files)
    prefix = folder.rstrip("/") + "/"
    return sorted((m.path, m.size_in_bytes, m.last_updated_in_seconds) for m in _listing(prefix)
                  if m.path[len(prefix):] and "/" not in m.path[len(prefix):])


def move(source: str, target: str) -> None:
    """Move the finished file ``source`` to ``target`` (both literal), replacing what is there.

    Locally a rename (through a temporary name in ``target``'s folder across filesystems), so
    the old file is replaced only by a whole new one; remote: a copy then a delete (an object
    appears whole). A retried move whose source is gone and whose target exists is done already.
    """
    if not exists(source) and exists(target):
        return
    if is_local(source) and is_local(target):
        src, dst = local_path(source), local_path(target)
        os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
        try:
            os.replace(src, dst)
            return
        except OSError as error:
            if error.errno != errno.EXDEV:
                raise
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(os.path.abspath(dst)))
        try:
            with os.fdopen(fd, "wb") as handle, open(src, "rb") as data:
                shutil.copyfileobj(data, handle)
            apply_default_mode(tmp)
            os.replace(tmp, dst)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        os.unlink(src)
        return
    if not is_local(source) and not is_local(target) and source.split("://")[0] == target.split("://")[0]:
        FileSystems.rename([source], [target])  # literal (GCS: copy, then delete)
        return
    if is_local(target):
        os.makedirs(os.path.dirname(os.path.abspath(local_path(target))), exist_ok=True)
        with FileSystems.open(source) as data:
            write_bytes_atomic(target, data.read())
    else:
        with open(local_path(source), "rb") as data, FileSystems.create(target) as handle:
            shutil.copyfileobj(data, handle)
    delete([source])


def staging_folder(output: str, run_id: str | None = None, temp_location: str | None = None) -> str:
    """Where a job's Beam file sinks (Parquet tables, TFRecords) write before each finished file is
    moved into ``output``.

    Args:
        output: the job's output folder.
        run_id: the run's id (None: a new one).
        temp_location: Beam's --temp_location.
    Returns:
        ``{output}/_work/tables/<run>``, unless ``output`` has glob characters (a Beam sink globs
        its prefix and deletes what matches): then a private local temporary folder for a local
        output, or ``{temp_location}/stembeam-tables/<run>`` for a remote one.
    Raises:
        ValueError naming --temp_location when that is needed and missing or itself a pattern.
    """
    import uuid

    check_staging(output, temp_location)
    name = run_id or uuid.uuid4().hex[:12]
    if not has_glob(output):
        return join(output, "_work", "tables", name)
    if is_local(output):
        return tempfile.mkdtemp(prefix=f"stembeam-tables-{name}-")
    return join(temp_location, "stembeam-tables", name)


def check_staging(output: str, temp_location: str | None = None) -> None:
    """Check that staging_folder has somewhere to stage for ``output``; creates nothing.

    Raises:
        ValueError: one line naming the flag (--temp_location).
    """
    if not has_glob(output):
        return
    if is_local(output):
        if has_glob(tempfile.gettempdir()):
            raise ValueError(f"--output {output} has glob characters (*?[), and so has the temporary folder {tempfile.gettempdir()}: set $TMPDIR to a plain path")
        return
    if not temp_location:
        raise ValueError(f"--output {output} has glob characters (*?[): give --temp_location (a folder without them) where its tables are written first")
    if has_glob(temp_location):
        raise ValueError(f"--temp_location {temp_location}: glob characters (*?[) are not allowed in it")


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
    """A local copy of the files directly in a remote folder (e.g. a gs:// model), kept in the
    user's private cache (``$STEMBEAM_CACHE/remote/``, 0700) and fetched again when a file's size
    or update time changed.

    Args:
        uri: the remote folder.
    Returns:
        ``(local folder, [(remote path, size, update time), ...])``: the copy and the remote
        listing it was made from.
    """
    import hashlib
    import json

    from stembeam.model.resolve import cache_dir

    root = _private_folder(os.path.join(cache_dir(), "remote"))
    local = os.path.join(root, hashlib.sha1(uri.encode("utf-8")).hexdigest()[:16])
    files = list_files(uri)  # the folder's name literally, brackets and all
    if not files:
        raise FileNotFoundError(f"{uri}: no files found")
    listing = json.dumps(files)
    stamp = os.path.join(local, ".stembeam-listing.json")
    if os.path.exists(stamp) and open(stamp, encoding="utf-8").read() == listing:
        return local, files
    # Files the remote folder no longer has must not linger in the copy.
    shutil.rmtree(local, ignore_errors=True)
    os.makedirs(local, mode=0o700, exist_ok=True)
    for path, _, _ in files:
        target = os.path.join(local, path.rstrip("/").rsplit("/", 1)[-1])
        with FileSystems.open(path) as source, open(target + ".part", "wb") as handle:
            shutil.copyfileobj(source, handle)
        os.replace(target + ".part", target)
    write_bytes_atomic(stamp, listing.encode("utf-8"))
    return local, files
