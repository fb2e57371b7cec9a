"""Shared fixtures: ../shared reference data, the official graph, the loaded 2-stems model."""
from __future__ import annotations

import os
import wave

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("STEMBEAM_SHARED", os.path.join(os.path.dirname(REPO), "shared"))
MODELS = os.path.join(SHARED, "models", "spleeter")
AUDIO = os.path.join(SHARED, "audio")
EXAMPLE = os.path.join(AUDIO, "spleeter-example", "audio_example.mp3")
CC0 = os.path.join(AUDIO, "cc0-multitrack")
CC0_SONGS = ["1.Hydrogen", "2.Lithium", "3.Sodium"]

os.environ.setdefault("STEMBEAM_MODEL_PATH", MODELS)
os.environ["STEMBEAM_NO_DOWNLOAD"] = "1"

needs_shared = pytest.mark.skipif(not os.path.isdir(MODELS), reason=f"reference data not found at {SHARED}")

# setup.py's package_dir: the checkout's folders are the subpackages of the one `stembeam` package.
PACKAGE_FOLDERS = {"stembeam": "stembeam", **{f"stembeam/{sub}": sub for sub in ("model", "pipeline", "transforms", "launch")}}
# setup.py's package_data: the report's page and scripts.
PACKAGE_DATA = ("stembeam/pipeline/report_assets", (".html", ".js", ".css"))


def package_modules(root: str = REPO) -> set:
    """The .py files of the checkout ``root``'s package folders as a wheel names them
    (``stembeam/model/features/spectral.py``, ...), and the package data (the report's page):
    what an installed stembeam must hold."""
    names = set()
    for package, folder in PACKAGE_FOLDERS.items():
        for parent, dirs, files in os.walk(os.path.join(root, folder)):
            # Every folder with modules, whether or not it has the __init__.py find_packages needs.
            dirs[:] = [d for d in dirs if d != "__pycache__" and not d.startswith(".")]
            inside = os.path.relpath(parent, os.path.join(root, folder))
            prefix = package if inside == "." else f"{package}/{inside.replace(os.sep, '/')}"
            names.update(f"{prefix}/{name}" for name in files if name.endswith(".py") or (prefix == PACKAGE_DATA[0] and name.endswith(PACKAGE_DATA[1])))
            if package == "stembeam":
                dirs[:] = []  # the root package's folder holds only its own modules
    return names


def stem_folder(output: str, track_id: str, source_uri: str = "") -> str:
    """Where the corpus job writes ``track_id``'s stems (ids with capitals get a hash suffix;
    a default id needs its ``source_uri``)."""
    from stembeam.transforms.records import Track

    return os.path.join(output, "stems", Track(track_id, source_uri).folder_name)


def write_manifest(path, rows, columns=("uri", "track_id")) -> str:
    """A CSV manifest of ``rows`` under ``columns``; its path."""
    import csv

    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(rows)
    return str(path)


def run_corpus(manifest, output, *flags) -> tuple:
    """The corpus job in this process: ``(separated, already done, failed)``."""
    from stembeam.pipeline.corpus import run_pipeline
    from stembeam.pipeline.summary import COUNTERS, counters as summary

    result = run_pipeline(["--manifest", manifest, "--output", str(output), *flags]).result
    counts = summary(result, COUNTERS)
    return counts["tracks_ok"], counts["tracks_skipped"], counts["tracks_failed"]


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    """10 log10(|ref|^2 / |ref - est|^2)."""
    reference = reference.astype(np.float64)
    return float(10 * np.log10(np.sum(reference**2) / np.sum((reference - estimate) ** 2)))


def read_wav(path: str) -> np.ndarray:
    """16-bit PCM wav -> [samples, channels] float32."""
    with wave.open(path) as handle:
        data = np.frombuffer(handle.readframes(handle.getnframes()), "<i2")
        return data.reshape(-1, handle.getnchannels()).astype(np.float32) / 32768.0


@pytest.fixture(scope="session")
def official_graph():
    from tests.reference_graph import OfficialGraph

    if not os.path.isdir(MODELS):
        pytest.skip(f"reference data not found at {SHARED}")
    return OfficialGraph(os.path.join(MODELS, "2stems"))


@pytest.fixture(scope="session")
def two_stems():
    """``(config, SegmentSeparator)`` of the official 2-stems model loaded into Keras."""
    from stembeam.model.load import load_separator

    if not os.path.isdir(MODELS):
        pytest.skip(f"reference data not found at {SHARED}")
    return load_separator("spleeter:2stems")


@pytest.fixture(scope="session")
def decoded():
    """Cache of decoded reference audio: ``decoded(path) -> [n, 2]``."""
    from stembeam.model.decode import load_audio

    cache = {}

    def get(path):
        if path not in cache:
            cache[path] = load_audio(path)
        return cache[path]

    return get
