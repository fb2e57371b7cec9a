"""Spleeter-exact source separation models in TensorFlow 2 / Keras 3 (no Beam here)."""
import importlib.abc
import sys


class _KerasWithoutScikitLearn(importlib.abc.MetaPathFinder):
    """Keras imports scikit-learn at start-up only for its optional scikit-learn wrappers
    (``keras.src.wrappers``), which stembeam never uses: about 1 s of every process's start-up
    on this stack (librosa installs scikit-learn). While those wrapper modules are being
    imported, scikit-learn reads as absent to them; every other import of it is untouched."""

    _WRAPPERS = ("keras.src.wrappers.fixes", "keras.src.wrappers.sklearn_wrapper")

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "sklearn" and any(_initialising(name) for name in self._WRAPPERS):
            raise ModuleNotFoundError("scikit-learn is not loaded for Keras' wrappers", name=fullname)
        return None


def _initialising(name: str) -> bool:
    module = sys.modules.get(name)
    return module is not None and getattr(getattr(module, "__spec__", None), "_initializing", False)


if "keras" not in sys.modules and not any(isinstance(finder, _KerasWithoutScikitLearn) for finder in sys.meta_path):
    sys.meta_path.insert(0, _KerasWithoutScikitLearn())
