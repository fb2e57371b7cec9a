"""Spleeter-exact source separation models in TensorFlow 2 / Keras 3 (no Beam here)."""
import importlib.abc
import sys


class _KerasWithoutScikitLearn(importlib.abc.MetaPathFinder):
    """Keras imports, at start-up, scikit-learn for its optional scikit-learn wrappers
    (``keras.src.wrappers``), matplotlib for ``keras.utils.plot_image_gallery`` and Pillow for
    its image-file utilities, none of which stembeam uses: about 1.5 s of every process's
    start-up on this stack (librosa installs scikit-learn and matplotlib). While those Keras
    modules are being imported, these packages read as absent to them (Keras then leaves the
    feature off, as when they are not installed); every other import of them is untouched."""

    _HIDDEN = {
        "sklearn": ("keras.src.wrappers.fixes", "keras.src.wrappers.sklearn_wrapper"),
        "matplotlib": ("keras.src.visualization.plot_image_gallery", "keras.src.visualization.plot_bounding_box_gallery"),
        "PIL": ("keras.src.utils.image_utils", "keras.src.utils.image_dataset_utils"),
    }

    def find_spec(self, fullname, path=None, target=None):
        importers = self._HIDDEN.get(fullname.partition(".")[0])
        if importers and any(_initialising(name) for name in importers):
            raise ModuleNotFoundError(f"{fullname} is not loaded for Keras' optional utilities", name=fullname)
        return None


def _initialising(name: str) -> bool:
    module = sys.modules.get(name)
    return module is not None and getattr(getattr(module, "__spec__", None), "_initializing", False)


if "keras" not in sys.modules and not any(isinstance(finder, _KerasWithoutScikitLearn) for finder in sys.meta_path):
    sys.meta_path.insert(0, _KerasWithoutScikitLearn())
