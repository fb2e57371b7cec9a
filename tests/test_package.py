"""The package as users get it: a wheel built from this checkout, installed into a fresh venv,
puts only ``stembeam`` at the top level of site-packages, and works from a folder holding the
user's own ``model.py``, ``pipeline.py``, ``transforms.py`` and ``launch.py``.

Nothing is downloaded: the fresh venv has no pip and no dependencies of its own; the wheel is
installed with the running interpreter's pip (``pip --python``, ``--no-index``), and the
dependencies come from the running interpreter's site-packages through a plain path line in a
.pth file. Site only runs the .pth files of site directories, not those of folders such a line
adds, so an editable stembeam installed there (a finder started by its own .pth) stays inactive:
the tests check that every stembeam module comes from the fresh venv.
"""
import csv
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import wave
import zipfile

import pyarrow.parquet as pq
import pytest

import stembeam
from tests.conftest import MODELS, REPO, needs_shared, package_modules

pytestmark = pytest.mark.cli  # whole commands as a user types them: `make test-cli` (CI runs it after `make test`)


VERSION = stembeam.__version__
TOP_LEVEL = {"stembeam", f"stembeam-{VERSION}.dist-info"}
EXAMPLE = os.path.join(REPO, "examples", "audio_example.mp3")
# What a user folder must never give stembeam: each of these files kills the process at import.
USER_MODULES = ("model", "pipeline", "transforms", "launch")
USER_FILE_EXIT = 97


def _run(command, **kwargs) -> subprocess.CompletedProcess:
    """``command`` run to its end; a failure shows its output."""
    done = subprocess.run(command, capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{command} exited with {done.returncode}\nstdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
    return done


def _clean_env(**extra) -> dict:
    """The environment without anything that points Python at other code (PYTHONPATH, a venv)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON") and k not in ("VIRTUAL_ENV", "__PYVENV_LAUNCHER__")}
    env.update(STEMBEAM_MODEL_PATH=os.environ.get("STEMBEAM_MODEL_PATH", MODELS), STEMBEAM_NO_DOWNLOAD="1", TF_CPP_MIN_LOG_LEVEL="2", **extra)
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel built from a copy of the checkout (a build in place would leave build/ and
    *.egg-info in it, and take stale files from an earlier build/), installed into a fresh venv."""
    root = tmp_path_factory.mktemp("package")
    source = root / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", ".venv", ".pytest_cache"))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "--no-cache-dir",
          "--disable-pip-version-check", "-w", str(root / "dist"), str(source)], env=_clean_env())
    (wheel,) = (root / "dist").glob("stembeam-*.whl")

    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], env=_clean_env())
    python = str(venv / "bin" / "python")
    site_packages = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], env=_clean_env()).stdout.strip()
    before = set(os.listdir(site_packages))
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "--no-cache-dir",
          "--disable-pip-version-check", str(wheel)], env=_clean_env())
    added = set(os.listdir(site_packages)) - before

    # The dependencies: the running interpreter's site-packages, one plain path per line.
    paths = sysconfig.get_paths()
    dependencies = list(dict.fromkeys([paths["purelib"], paths["platlib"]]))
    with open(os.path.join(site_packages, "_stembeam_test_dependencies.pth"), "w") as handle:
        handle.write("".join(f"{path}\n" for path in dependencies))
    return {"wheel": str(wheel), "python": python, "bin": str(venv / "bin"), "site_packages": site_packages, "added": added,
            "dependencies": dependencies}


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory):
    """A user's project folder with modules named as the checkout's folders."""
    folder = tmp_path_factory.mktemp("user-project")
    for name in USER_MODULES:
        (folder / f"{name}.py").write_text(textwrap.dedent(f"""\
            import os, sys
            sys.stderr.write("user file imported: {name}.py\\n")
            sys.stderr.flush()
            os._exit({USER_FILE_EXIT})
            """))
    return folder


def _top_level(names) -> set:
    return {name.split("/", 1)[0] for name in names}


def test_the_wheel_installs_only_stembeam_at_the_top_level(installed):
    """The wheel, its RECORD and the fresh venv's site-packages: ``stembeam`` and its dist-info,
    nothing else (no model/, pipeline/, transforms/, launch/, tests/); and the package holds every
    module of the checkout's folders, and nothing but them."""
    with zipfile.ZipFile(installed["wheel"]) as archive:
        names = archive.namelist()
    assert _top_level(names) == TOP_LEVEL
    assert {n for n in names if n.startswith("stembeam/")} == package_modules()

    dist_info = os.path.join(installed["site_packages"], f"stembeam-{VERSION}.dist-info")
    with open(os.path.join(dist_info, "RECORD"), newline="") as handle:
        record = [row[0] for row in csv.reader(handle)]
    inside = [path for path in record if not path.startswith("..")]
    outside = [path for path in record if path.startswith("..")]
    assert _top_level(inside) == TOP_LEVEL
    assert [os.path.basename(path) for path in outside] == ["stembeam"]  # the console script in bin/
    with open(os.path.join(dist_info, "top_level.txt")) as handle:
        assert handle.read().split() == ["stembeam"]
    assert installed["added"] == TOP_LEVEL
    assert os.access(os.path.join(installed["bin"], "stembeam"), os.X_OK)


def test_imports_from_a_folder_with_the_users_own_modules(installed, user_folder):
    """With the user's folder as cwd (first on sys.path for ``-c`` and ``-m``), ``import stembeam``
    and its subpackages take the installed package's modules, never the user's files; the
    editable stembeam of the dependencies' site-packages stays inactive."""
    probe = textwrap.dedent("""\
        import json, sys
        import stembeam
        import stembeam.pipeline.cli, stembeam.model.load, stembeam.transforms.tracks, stembeam.launch.dataflow
        import importlib.metadata
        print(json.dumps({
            "files": {name: getattr(module, "__file__", None) for name, module in sys.modules.items() if name.split(".")[0] == "stembeam"},
            "path": list(stembeam.__path__),
            "editable": [name for name in sys.modules if "editable" in name.lower()]
                        + [repr(finder) for finder in sys.meta_path if "editable" in repr(finder).lower()],
            "distribution": str(importlib.metadata.distribution("stembeam")._path),
            "sys_path": sys.path,
        }))
        """)
    done = subprocess.run([installed["python"], "-c", probe], cwd=user_folder, env=_clean_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "user file imported" not in done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    package = os.path.join(installed["site_packages"], "stembeam")
    assert found["path"] == [package]
    assert {"stembeam.pipeline.cli", "stembeam.model.load", "stembeam.transforms.tracks", "stembeam.launch.dataflow"} <= set(found["files"])
    assert all(path is None or path.startswith(package + os.sep) for path in found["files"].values()), found["files"]
    assert found["distribution"] == os.path.join(installed["site_packages"], f"stembeam-{VERSION}.dist-info")
    assert found["editable"] == []
    assert found["sys_path"][0] == "" and set(installed["dependencies"]) <= set(found["sys_path"])
    # The test means something: the user's folder shadows top-level names, and the dependencies'
    # folder does hold an editable install of stembeam when it is a development venv.
    shadowed = subprocess.run([installed["python"], "-c", "import model"], cwd=user_folder, env=_clean_env(), capture_output=True, text=True)
    assert shadowed.returncode == USER_FILE_EXIT and "user file imported: model.py" in shadowed.stderr
    editable = [name for folder in installed["dependencies"] for name in os.listdir(folder) if name.startswith("__editable__") and "stembeam" in name]
    if editable:
        assert any(name.endswith(".pth") for name in editable)  # present, and not run

    done = _run([installed["python"], "-m", "stembeam", "--help"], cwd=user_folder, env=_clean_env())
    assert done.stdout.startswith("usage: stembeam") and "separate" in done.stdout and "pipeline" in done.stdout


def _frames(path) -> int:
    with wave.open(str(path)) as handle:
        assert (handle.getnchannels(), handle.getframerate()) == (2, 44100)
        return handle.getnframes()


@needs_shared
def test_the_console_script_separates_and_runs_the_pipeline(installed, user_folder, tmp_path):
    """The venv's ``stembeam`` program, run in the user's folder (also on PYTHONPATH, so the
    console scripts see the user's modules first too): ``separate`` writes 5 s stems of the
    shipped example with the official model, ``pipeline`` on the DirectRunner writes stems and a
    metadata table with ``ok`` rows."""
    program = os.path.join(installed["bin"], "stembeam")
    env = _clean_env(PYTHONPATH=str(user_folder))

    separated = tmp_path / "separated"
    done = subprocess.run([program, "separate", "--duration", "5", "--no-progress", "-o", str(separated), EXAMPLE],
                          cwd=user_folder, env=env, capture_output=True, text=True)
    assert done.returncode == 0 and "user file imported" not in done.stderr, done.stderr[-4000:]
    assert sorted(p.name for p in (separated / "audio_example").iterdir()) == ["accompaniment.wav", "vocals.wav"]
    for stem in ("vocals", "accompaniment"):
        assert _frames(separated / "audio_example" / f"{stem}.wav") == 5 * 44100

    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"uri,track_id,duration\n{EXAMPLE},example,4\n")
    output = tmp_path / "out"
    done = subprocess.run([program, "pipeline", "--manifest", str(manifest), "--output", str(output), "--runner", "DirectRunner"],
                          cwd=user_folder, env=env, capture_output=True, text=True)
    assert done.returncode == 0 and "user file imported" not in done.stderr, done.stderr[-4000:]
    (table,) = (output / "metadata").glob("*.parquet")
    rows = pq.read_table(table).to_pylist()
    assert sorted((r["track_id"], r["stem"], r["status"]) for r in rows) == [("example", "accompaniment", "ok"), ("example", "vocals", "ok")]
    for row in rows:
        assert row["stem_uri"] == str(output / "stems" / "example" / f"{row['stem']}.wav")
        assert _frames(row["stem_uri"]) == 4 * 44100 and row["duration_s"] == pytest.approx(4.0)
