"""Importing or calling stembeam changes nothing outside stembeam (issue 29): in a fresh process,
``import stembeam``, ``import stembeam.model``, ``Separator()``, ``Separator.separate`` and
``read_output`` leave ``sys.meta_path``, the garbage collector (on, nothing frozen),
``os.environ``, ``tempfile.tempdir``, the temporary folder's files (TensorFlow's autograph
writes a module there per function it converts), the warning filters and Keras' optional
features as they found them. What the third-party libraries do to the process when they are
imported is theirs: the probe imports them first, so what is compared is what stembeam itself
does."""
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, needs_shared

pytestmark = needs_shared

_PROBE = """
import gc, json, os, sys, tempfile, warnings
# The libraries stembeam's calls import, imported first: their own import-time changes (absl's and
# six's import hooks, TensorFlow's environment variables, numpy's and urllib3's warning filters)
# are the baseline.
import numpy, scipy.signal, soundfile, pyarrow.parquet, tensorflow, keras, tensorflow_io
import apache_beam, apache_beam.io.filesystems, apache_beam.ml.inference.base
tempfile.gettempdir()  # the standard library caches the folder in tempfile.tempdir on first use

def snapshot():
    return {
        "meta_path": [repr(type(finder)) if not isinstance(finder, type) else repr(finder) for finder in sys.meta_path],
        "gc_enabled": gc.isenabled(), "gc_frozen": gc.get_freeze_count(), "environ": dict(os.environ),
        "tempdir": tempfile.tempdir, "warning_filters": [repr(f) for f in warnings.filters],
        "temporary_files": sorted(os.listdir(tempfile.gettempdir())),
    }

def changes(before):
    after = snapshot()
    return sorted(name for name in before if before[name] != after[name])

before = snapshot()
found = {}
import stembeam
found["import stembeam"] = changes(before)
import stembeam.model
found["import stembeam.model"] = changes(before)
separator = stembeam.Separator("spleeter:2stems")
found["Separator()"] = changes(before)
separator.separate(numpy.zeros((44100, 2), numpy.float32))  # silent: no graph runs
separator.separate(numpy.random.RandomState(0).uniform(-0.5, 0.5, (44100, 2)).astype(numpy.float32))
found["separate"] = changes(before)
stembeam.read_output(sys.argv[1])
found["read_output"] = changes(before)
found["collector"] = [gc.isenabled(), gc.get_freeze_count()]
print(json.dumps(found))
"""

_KERAS = """
import stembeam, stembeam.model
separator = stembeam.Separator("spleeter:2stems")
import keras.src.wrappers.fixes as fixes, keras.src.utils.image_utils as images
print(fixes.sklearn is not None, images.pil_image is not None)
"""


@pytest.fixture(scope="module")
def output(tmp_path_factory):
    from tests.conftest import EXAMPLE, run_corpus, write_manifest

    folder = tmp_path_factory.mktemp("side")
    manifest = write_manifest(folder / "m.csv", [(EXAMPLE, "example")])
    assert run_corpus(manifest, folder / "out", "--features")[0] == 1
    return str(folder / "out")


def test_the_library_leaves_the_process_as_it_found_it(output, tmp_path):
    # A temporary folder of the probe's own, so that only its files are seen there.
    env = dict(os.environ, TMPDIR=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", _PROBE, output], cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found.pop("collector") == [True, 0]  # the collector on, nothing frozen
    assert found == {step: [] for step in ("import stembeam", "import stembeam.model", "Separator()", "separate", "read_output")}


def test_keras_keeps_its_optional_features():
    """The command hides scikit-learn, matplotlib and Pillow from Keras while it imports (a start-up
    trick of the command's own); a library user's Keras has them."""
    done = subprocess.run([sys.executable, "-c", _KERAS], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split("\n")[-2] == "True True"


_QUIET = """
import stembeam
separator = stembeam.Separator("spleeter:2stems")
stems = separator.separate(stembeam.load_audio({example!r}))
table = stembeam.read_output({output!r})
tables = stembeam.read_tables({output!r})
"""


def test_the_library_prints_nothing(output):
    """Issue 30: a fresh process that imports stembeam, separates the example and reads an output
    writes nothing, neither through Python nor on its file descriptors (TensorFlow's C++ log),
    without any TF_CPP_MIN_LOG_LEVEL of the caller's."""
    import os

    from tests.conftest import EXAMPLE

    env = {key: value for key, value in os.environ.items() if key not in ("TF_CPP_MIN_LOG_LEVEL", "PYTHONWARNINGS")}
    done = subprocess.run([sys.executable, "-c", _QUIET.format(example=EXAMPLE, output=output)], cwd=REPO, capture_output=True, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout == b"" and done.stderr == b"", done.stderr.decode("utf-8", "replace")[-3000:]
