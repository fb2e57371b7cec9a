"""The command's start-up imports only what a job needs (issue 23): Keras' scikit-learn
wrappers, its matplotlib and Pillow utilities and tensorflow-hub are not loaded, and
scikit-learn, matplotlib and Pillow still import normally afterwards. These are the command's
own tricks (pipeline/startup.py, enabled by its entry point): the library leaves the process as
it found it (tests/test_side_effects.py)."""
import subprocess
import sys

import pytest

from tests.conftest import REPO

_PROBE = """
import sys
from stembeam.pipeline.cli import enable_startup_tricks
enable_startup_tricks()
import stembeam.pipeline.corpus
corpus_only = sorted(name for name in ("tensorflow", "keras") if name in sys.modules)
import stembeam.model.load, stembeam.transforms.inference
loaded = sorted(name for name in ("sklearn", "tensorflow_hub", "matplotlib", "PIL") if name in sys.modules)
import keras.src.wrappers.fixes as keras_fixes
import keras.src.utils.image_utils as keras_images
import sklearn
from sklearn.base import BaseEstimator
import matplotlib.pyplot
from PIL import Image
print(corpus_only, loaded, keras_fixes.sklearn is None, keras_images.pil_image is None, "tensorflow" in sys.modules, sklearn.__name__,
      matplotlib.pyplot.__name__, Image.__name__)
"""


def test_a_job_loads_neither_scikit_learn_matplotlib_pillow_nor_tensorflow_hub():
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", _PROBE], cwd=REPO, capture_output=True, text=True, check=True).stdout
    # The corpus module leaves TensorFlow to the model's loader (a background thread of the job).
    assert out.split("\n")[-2] == "[] [] True True True sklearn matplotlib.pyplot PIL.Image"


@pytest.mark.fast
def test_the_collector_is_paused_while_any_start_up_block_runs_then_frozen_and_back():
    import gc
    import threading

    from stembeam.pipeline.startup import collector_paused

    assert gc.isenabled()
    frozen = gc.get_freeze_count()
    inside, release = threading.Event(), threading.Event()

    def other_thread():
        with collector_paused():
            inside.set()
            release.wait(10)

    worker = threading.Thread(target=other_thread)
    with collector_paused():
        assert not gc.isenabled()
        worker.start()
        inside.wait(10)
    assert not gc.isenabled()  # the other thread's block still runs
    release.set()
    worker.join(10)
    assert gc.isenabled() and gc.get_freeze_count() > frozen
    gc.unfreeze()
    # A collector the caller had turned off stays off.
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()


def test_a_job_runs_with_the_collector_on(tmp_path):
    # A job that stops at once (no such manifest) after importing its modules with the collector paused.
    probe = ("import gc, sys\nfrom stembeam.pipeline import cli\ncli.enable_startup_tricks()\n"
             f"code = cli.main(['pipeline', '--manifest', {str(tmp_path / 'none.csv')!r}, '--output', {str(tmp_path / 'out')!r}])\n"
             "print(code, gc.isenabled(), gc.get_freeze_count() > 0)\n")
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", probe], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[-2] == "1 True True"
