"""Start-up imports only what a job needs (issue 23): Keras' scikit-learn wrappers and
tensorflow-hub are not loaded, and scikit-learn still imports normally afterwards."""
import subprocess
import sys

from tests.conftest import REPO

_PROBE = """
import sys
import stembeam.pipeline.corpus
corpus_only = sorted(name for name in ("tensorflow", "keras") if name in sys.modules)
import stembeam.model.load, stembeam.transforms.inference
loaded = sorted(name for name in ("sklearn", "tensorflow_hub") if name in sys.modules)
import keras.src.wrappers.fixes as keras_fixes
import sklearn
from sklearn.base import BaseEstimator
print(corpus_only, loaded, keras_fixes.sklearn is None, "tensorflow" in sys.modules, sklearn.__name__)
"""


def test_a_job_loads_neither_scikit_learn_nor_tensorflow_hub():
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", _PROBE], cwd=REPO, capture_output=True, text=True, check=True).stdout
    # The corpus module leaves TensorFlow to the model's loader (a background thread of the job).
    assert out.split("\n")[-2] == "[] [] True True sklearn"
