"""Official TF1 name-based checkpoints <-> Keras weights, by variable name; their weights by layer
without a Keras model (CheckpointWeights)."""
from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Dict, Tuple

import keras
import numpy as np
import tensorflow as tf

# Variables of the official checkpoints that are training bookkeeping, not weights.
NON_WEIGHT_VARIABLES = ("global_step",)


class ModelFileError(ValueError):
    """A model file that cannot be read (truncated, corrupt); ``str()`` names the file."""


def _unreadable(path: str, error: BaseException) -> ModelFileError:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reason = lines[0] if lines else type(error).__name__
    return ModelFileError(f"{path}: cannot be read, truncated or corrupt ({reason})")


def _data_files(prefix: str) -> str:
    folder, stem = os.path.split(prefix)
    names = sorted(name for name in tf.io.gfile.listdir(folder or ".") if name.startswith(stem + ".data-"))
    return ", ".join(os.path.join(folder, name) for name in names) or prefix + ".data-*"


def _has_glob(path: str) -> bool:
    return any(char in path for char in "*?[")


def checkpoint_prefix(model_dir: str) -> str:
    """The checkpoint prefix in a model folder.

    A folder whose name holds glob characters (``2stems [copy]``) is read literally: TF's own
    lookup globs the prefix and finds nothing there.

    Args:
        model_dir: the folder.
    Returns:
        The prefix its ``checkpoint`` file names, else ``{model_dir}/model``.
    Raises:
        FileNotFoundError: neither exists.
    """
    if _has_glob(model_dir):
        latest = None
        if tf.io.gfile.exists(os.path.join(model_dir, "checkpoint")):
            state = tf.train.get_checkpoint_state(model_dir)  # reads the file, no glob
            named = state.model_checkpoint_path if state else ""
            if named and tf.io.gfile.exists(named + ".index"):
                latest = named
    else:
        latest = tf.train.latest_checkpoint(model_dir)
    if latest:
        return latest
    prefix = os.path.join(model_dir, "model")
    if tf.io.gfile.exists(prefix + ".index"):
        return prefix
    raise FileNotFoundError(f"no TF checkpoint (checkpoint / model.index) in {model_dir}")


@contextlib.contextmanager
def _readable(prefix: str):
    """``prefix`` itself, or for a local one whose path holds glob characters (TF's reader globs
    it) the same files linked under a plain temporary name."""
    if not _has_glob(prefix) or "://" in prefix:
        yield prefix
        return
    folder, stem = os.path.split(prefix)
    with tempfile.TemporaryDirectory(prefix="stembeam-ckpt-") as plain:
        for name in tf.io.gfile.listdir(folder):
            if name == stem + ".index" or name.startswith(stem + ".data-"):
                os.symlink(os.path.abspath(os.path.join(folder, name)), os.path.join(plain, "model" + name[len(stem):]))
        yield os.path.join(plain, "model")


def checkpoint_variables(prefix: str) -> Dict[str, Tuple[int, ...]]:
    """Weight variables of a checkpoint (bookkeeping variables such as ``global_step`` left out).

    Args:
        prefix: the checkpoint prefix (see checkpoint_prefix).
    Returns:
        ``{name: shape}``.
    Raises:
        ModelFileError: the index cannot be read.
    """
    with _readable(prefix) as readable:
        try:
            listed = tf.train.list_variables(readable)
        except (tf.errors.OpError, IndexError, ValueError) as error:
            raise _unreadable(prefix + ".index", error) from None
    return {name: tuple(shape) for name, shape in listed if name not in NON_WEIGHT_VARIABLES}


def keras_variables(model: keras.Model) -> Dict[str, Tuple[int, ...]]:
    """The weights of ``model`` under their checkpoint names: ``{"layer/weight": shape}``."""
    return {w.path: tuple(w.shape) for w in model.weights}


def load_official_checkpoint(model: keras.Model, prefix: str) -> None:
    """Assign every weight of ``model`` from a TF1 checkpoint.

    Args:
        model: the Keras U-nets (unet.build_model).
        prefix: the checkpoint prefix.
    Raises:
        ValueError: the checkpoint's weight variables and the model's weights do not match one to
        one, name for name and shape for shape; ModelFileError: a file cannot be read.
    """
    expected = checkpoint_variables(prefix)
    ours = keras_variables(model)
    missing = sorted(set(ours) - set(expected))
    extra = sorted(set(expected) - set(ours))
    wrong = sorted(n for n in set(ours) & set(expected) if ours[n] != expected[n])
    if missing or extra or wrong:
        raise ValueError(
            f"checkpoint {prefix} does not match model {model.name}: "
            f"missing {missing[:5]}, unused {extra[:5]}, shape mismatch {wrong[:5]}"
        )
    values = _read_values(prefix, [weight.path for weight in model.weights])
    for weight in model.weights:
        weight.assign(values[weight.path])


def _read_values(prefix: str, names) -> Dict[str, np.ndarray]:
    """``{name: array}`` of the checkpoint's variables ``names``; ModelFileError naming the index
    or the data file that cannot be read."""
    with _readable(prefix) as readable:
        try:
            reader = tf.train.load_checkpoint(readable)
        except (tf.errors.OpError, IndexError, ValueError) as error:
            raise _unreadable(prefix + ".index", error) from None
        try:
            return {name: reader.get_tensor(name) for name in names}
        except (tf.errors.OpError, IndexError, ValueError) as error:
            raise _unreadable(_data_files(prefix), error) from None


# Each layer's weights in Keras' order (``get_weights()``), by the last part of their names.
_LAYER_WEIGHTS = (("kernel", "bias"), ("gamma", "beta", "moving_mean", "moving_variance"))
# TF1's tf.layers.batch_normalization epsilon, the one the official models were trained with
# (Keras' default too, which unet.build_model keeps).
BATCH_NORM_EPSILON = 1e-3


class CheckpointWeights:
    """An official checkpoint's weights by layer name, read without building the Keras model.

    The bfloat16 U-nets (unet.reduced_precision_unets) need only the weights, and building the
    Keras model is most of a model's load: 0.45 s on its own, over 1 s beside a job's start-up.

    Args:
        prefix: the checkpoint prefix.
    Raises:
        ModelFileError: a file cannot be read.
    """

    def __init__(self, prefix: str):
        self.prefix = prefix
        self._values = _read_values(prefix, checkpoint_variables(prefix))
        self._unread = set(self._values)

    def layer_weights(self, layer: str) -> list:
        """``layer``'s weights as Keras' ``get_weights()`` orders them (a convolution's kernel and
        bias; a batch norm's gamma, beta, moving mean and moving variance), float32 arrays.

        Raises:
            ValueError: the checkpoint has no such layer (it is not the configuration's model).
        """
        for names in _LAYER_WEIGHTS:
            if f"{layer}/{names[0]}" in self._values:
                self._unread.difference_update(f"{layer}/{name}" for name in names)
                return [self._values[f"{layer}/{name}"] for name in names]
        raise ValueError(f"checkpoint {self.prefix} does not match the model: no weights of layer {layer}")

    def check_all_read(self) -> None:
        """ValueError when a weight of the checkpoint was never asked for: the checkpoint holds
        another model (more stems) than the configuration describes."""
        if self._unread:
            raise ValueError(f"checkpoint {self.prefix} does not match the model: unused {sorted(self._unread)[:5]}")


def save_official_checkpoint(model: keras.Model, prefix: str, global_step: int = 0) -> str:
    """Write ``model``'s weights as a TF1 name-based checkpoint with the official names.

    Args:
        model: the Keras U-nets.
        prefix: the checkpoint prefix to write.
        global_step: stored as ``global_step``, as Spleeter's Estimator did.
    Returns:
        The prefix written.
    """
    values = {w.path: np.asarray(w.numpy()) for w in model.weights}
    values["global_step"] = np.int64(global_step)
    # A TF1 Saver keys the checkpoint by the given names, as Spleeter's Estimator did.
    with tf.Graph().as_default():
        variables = {name: tf.compat.v1.Variable(value, name=name.replace("/", "__")) for name, value in values.items()}
        saver = tf.compat.v1.train.Saver(var_list=variables)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            return saver.save(session, prefix, write_meta_graph=False)
