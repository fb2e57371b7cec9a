"""Find a model folder for a name like ``spleeter:2stems`` or a path.

Order: an explicit folder, ``$STEMBEAM_MODEL_PATH/<2stems>``, the local cache
(``$STEMBEAM_CACHE``, default ``~/.cache/stembeam/models``), then the official
release download (verified by sha256). Spleeter's 16 kHz names (``spleeter:2stems-16kHz``...)
use their base model's folder, cache and download. Set ``STEMBEAM_NO_DOWNLOAD=1`` to forbid
the download; the error then names every place that was looked at.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request
from typing import List

import tensorflow as tf

from stembeam.model.config import CONFIGS, weights_name

RELEASE_URL = "https://github.com/deezer/spleeter/releases/download/v1.4.0/{name}.tar.gz"
# A mirror of the release assets (its {name}.tar.gz files; checked against the same sha256).
RELEASE_URL_VARIABLE = "STEMBEAM_RELEASE_URL"


def release_url(short: str) -> str:
    """Where the official ``short`` model (``2stems``...) is downloaded from: the release, or the
    mirror ``$STEMBEAM_RELEASE_URL`` names (a folder URL holding ``2stems.tar.gz``...).
    """
    mirror = os.environ.get(RELEASE_URL_VARIABLE)
    return f"{mirror.rstrip('/')}/{short}.tar.gz" if mirror else RELEASE_URL.format(name=short)
# sha256 of each official release's model.data-00000-of-00001
OFFICIAL_DATA_SHA256 = {
    "2stems": "7747f9fd2c782306dbec1504360fbb645a097a48446f23486c3ff9c89bc11788",
    "4stems": "3823e0ef50835cca3907c386dc9667a6a9af77b40a20c3ab845a8d6c9592255d",
    "5stems": "aace47a9eacc62e6fda823cee92ba45375b48e65b7c69713b91a7fa9d87ae920",
}
DATA_FILE = "model.data-00000-of-00001"


class ModelNotFoundError(FileNotFoundError):
    """No model folder found; the message lists every place looked at."""


def cache_dir() -> str:
    """The local cache of official models: ``$STEMBEAM_CACHE``, default ``~/.cache/stembeam/models``."""
    return os.environ.get("STEMBEAM_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "stembeam", "models"))


def is_model_dir(path: str) -> bool:
    """Whether ``path`` is a folder holding a stembeam export or a TF checkpoint with weights."""
    return tf.io.gfile.isdir(path) and missing_model_files(path) is None


def missing_model_files(path: str) -> str | None:
    """What a folder lacks to be a model.

    Args:
        path: an existing folder.
    Returns:
        None when it has a ``model.keras`` or a TF checkpoint's ``.index`` and ``.data-*``
        files; else one line saying what is missing.
    """
    names = set(tf.io.gfile.listdir(path))
    if "model.keras" in names:
        return None
    indexes = sorted(n for n in names if n.endswith(".index"))
    if not indexes:
        return "no model.keras and no checkpoint (model.index with model.data-*)"
    stem = indexes[0][: -len(".index")]
    if not any(n.startswith(stem + ".data-") for n in names):
        return f"{indexes[0]} but no weights ({stem}.data-00000-of-00001): the official release's data file is missing"
    return None


def _incomplete(folder: str) -> str:
    """``": incomplete: it has ..."`` for an existing folder that is not a whole model, else ""."""
    if not tf.io.gfile.isdir(folder):
        return ""
    missing = missing_model_files(folder)
    return f": incomplete: it has {missing}" if missing else ""


def _known_names_hint(name: str, short: str) -> str:
    """Spleeter's model names, for a name that looks like one and is not (``spleeter:2stems-22kHz``,
    ``2stems-16khz``): no folder of that name was found either."""
    if short in OFFICIAL_DATA_SHA256 or not (name.startswith("spleeter:") or short.startswith(tuple(OFFICIAL_DATA_SHA256))):
        return ""
    return f" ({name!r} is none of Spleeter's models: {', '.join(CONFIGS)})"


def resolve_model_dir(name: str, model_dir: str | None = None, download: bool | None = None) -> str:
    """Find the folder of a model (see the module docstring for the order looked in).

    Args:
        name: ``spleeter:2stems``, ``2stems``, a folder, or a configuration JSON (Spleeter's
            names its folder ``model_dir``).
        model_dir: a folder looked at first.
        download: allow downloading an official release into the cache (None: unless
            ``$STEMBEAM_NO_DOWNLOAD`` is set).
    Returns:
        The folder's path.
    Raises:
        ModelNotFoundError: the message lists every place looked at (or what an incomplete
        folder lacks).
    """
    if is_config_file(name) and not model_dir:
        return _config_model_dir(name, download)
    looked: List[str] = []
    # A name with a "/" or a leading "." is a path; so is any existing folder of that name.
    as_path = name if ("/" in name or name.startswith(".") or tf.io.gfile.isdir(name)) else None
    for candidate in dict.fromkeys(filter(None, (model_dir, as_path))):
        if tf.io.gfile.isdir(candidate):
            missing = missing_model_files(candidate)
            if missing is None:
                return candidate
            raise ModelNotFoundError(f"model folder {candidate} is incomplete: it has {missing}")
        looked.append(f"{candidate} (given path: no such folder)")
    short = weights_name(name)  # 16 kHz names use their base model's folder
    env_root = os.environ.get("STEMBEAM_MODEL_PATH")
    if env_root:
        candidate = os.path.join(env_root, short)
        if is_model_dir(candidate):
            return candidate
        looked.append(f"{candidate} ($STEMBEAM_MODEL_PATH{_incomplete(candidate)})")
    else:
        looked.append("$STEMBEAM_MODEL_PATH (not set)")
    cached = os.path.join(cache_dir(), short)
    if is_model_dir(cached):
        return cached
    looked.append(f"{cached} (cache{_incomplete(cached)})")
    if download is None:
        download = os.environ.get("STEMBEAM_NO_DOWNLOAD", "") in ("", "0")
    if short in OFFICIAL_DATA_SHA256:
        url = release_url(short)
        if download:
            try:
                return download_official(short, cached)
            except Exception as error:  # noqa: BLE001 - reported with every other place
                looked.append(f"{url} (download failed: {error})")
        else:
            looked.append(f"{url} (download disabled by STEMBEAM_NO_DOWNLOAD)")
    raise ModelNotFoundError(f"model {name!r} not found; looked in: " + "; ".join(looked) + _known_names_hint(name, short))


def is_config_file(name: str) -> bool:
    """Whether the model ``name`` is a configuration file (``-p CONFIG.json``, as Spleeter takes it)."""
    return name.lower().endswith(".json")


def _config_model_dir(path: str, download: bool | None) -> str:
    """The folder a Spleeter configuration's ``model_dir`` names: a folder (relative to the
    current directory, as Spleeter reads it), else a model name looked up as usual."""
    from stembeam.model.config import load_config_file

    if not tf.io.gfile.exists(path):
        raise ModelNotFoundError(f"configuration {path} not found")
    try:
        _, training = load_config_file(path)
    except ValueError as error:
        raise ModelNotFoundError(str(error)) from None
    folder = training.model_dir if training is not None else None
    if not folder:
        raise ModelNotFoundError(f"{path}: no model_dir in the configuration (give the model folder with --model-dir)")
    if is_model_dir(folder):
        return folder
    try:
        return resolve_model_dir(folder, download=download)
    except ModelNotFoundError as error:
        raise ModelNotFoundError(f"{path}: model_dir {folder!r}: {error}") from None


def sha256_of(path: str) -> str:
    """Hex sha256 of the local file ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_official(short: str, destination: str) -> str:
    """Download and unpack an official release, checking the weights' sha256.

    Args:
        short: ``2stems``, ``4stems`` or ``5stems``.
        destination: the folder to create (its parent is created if needed).
    Returns:
        ``destination``.
    Raises:
        ValueError: a sha256 mismatch; urllib's and tarfile's errors as they come.
    """
    url = release_url(short)
    parent = os.path.dirname(destination)
    os.makedirs(parent, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=parent) as tmp:
        archive = os.path.join(tmp, "model.tar.gz")
        with urllib.request.urlopen(url, timeout=60) as response, open(archive, "wb") as out:
            shutil.copyfileobj(response, out)
        unpacked = os.path.join(tmp, short)
        with tarfile.open(archive) as tar:
            tar.extractall(unpacked, filter="data")
        digest = sha256_of(os.path.join(unpacked, DATA_FILE))
        if digest != OFFICIAL_DATA_SHA256[short]:
            raise ValueError(f"sha256 mismatch for {url}: got {digest}")
        os.replace(unpacked, destination)
    return destination


def main(argv=None) -> int:
    """``python -m stembeam.model.resolve [NAME]``: print the folder of the model NAME (default
    ``spleeter:2stems``), downloading the official release into the cache when needed."""
    import sys

    names = list(sys.argv[1:] if argv is None else argv) or ["spleeter:2stems"]
    try:
        for name in names:
            print(resolve_model_dir(name))
    except ModelNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
