"""Shared fixtures and helpers: ../shared reference data, the official graph, the loaded 2-stems
model, manifests, the corpus job in this process or as a command, ``stembeam`` in a fresh
process, and an in-memory GCS server."""
from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
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
    """A UTF-8 CSV manifest of ``rows`` (tuples in the order of ``columns``); its path."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(rows)
    return str(path)


def pipeline_command(manifest, output, *flags) -> list:
    """The command line of the corpus job (``stembeam pipeline``) as a process of its own."""
    return [sys.executable, "-m", "stembeam.pipeline", "--manifest", str(manifest), "--output", str(output), *flags]


def peak_rss_mb(command) -> float:
    """Run ``command`` (from the checkout) to its successful end: its peak resident memory, MB."""
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    assert process.returncode == 0, process.stderr.read().decode()[-3000:]
    return usage.ru_maxrss / 1024.0


def run_cli(*args, inject: str = "", cwd=None, env=None, timeout=600) -> tuple:
    """``stembeam ARGS`` in a fresh process (``inject``: Python run first, e.g. to break
    something): ``(exit code, non-blank stderr lines)``."""
    code = f"{inject}\nfrom stembeam.pipeline.cli import entry\nimport sys\nsys.argv = ['stembeam'] + {list(args)!r}\nentry()"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd or REPO, timeout=timeout, env=env)
    return done.returncode, [line for line in done.stderr.splitlines() if line.strip()]


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


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def gcs():
    """An empty in-memory GCS server (gcp-storage-emulator) on 127.0.0.1 for the test module,
    with this process pointed at it (google-cloud-storage, and so Beam's GCS filesystem,
    anonymously) until the module's end: ``(client, environment for subprocesses)``."""
    pytest.importorskip("gcp_storage_emulator")
    from gcp_storage_emulator.server import create_server

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
            patch.setenv("NO_GCE_CHECK", "True")
            from google.cloud import storage

            client = storage.Client.create_anonymous_client()
            client.project = "test"
            yield client, os.environ.copy()
    finally:
        server.stop()


GCS_BUCKETS = ("stembeam-data", "stembeam-models", "stembeam-out")


@pytest.fixture(scope="module")
def gcs_corpus(gcs):
    """``gcs`` with the cloud tests' buckets: ``stembeam-data`` (the example as
    ``audio/example.mp3``, a text file as ``audio/broken.wav``, ``manifest.csv`` listing both,
    the first by a relative path), ``stembeam-models`` (the official 2-stems checkpoint under
    ``spleeter/2stems/``) and an empty ``stembeam-out``: ``(client, environment)``."""
    if not os.path.isdir(MODELS):
        pytest.skip(f"reference data not found at {SHARED}")
    client, env = gcs
    for name in GCS_BUCKETS:
        client.create_bucket(name)
    data = client.bucket("stembeam-data")
    data.blob("audio/example.mp3").upload_from_filename(EXAMPLE)
    data.blob("audio/broken.wav").upload_from_string(b"not audio")
    data.blob("manifest.csv").upload_from_string("uri,track_id\naudio/example.mp3,example\ngs://stembeam-data/audio/broken.wav,broken\n")
    models = client.bucket("stembeam-models")
    for name in os.listdir(os.path.join(MODELS, "2stems")):
        models.blob(f"spleeter/2stems/{name}").upload_from_filename(os.path.join(MODELS, "2stems", name))
    return client, dict(env, TF_CPP_MIN_LOG_LEVEL="2")
