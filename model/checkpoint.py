"""Official TF1 name-based checkpoints <-> Keras weights, by variable name."""
from __future__ import annotations

import os
from typing import Dict, Tuple

import keras
import numpy as np
import tensorflow as tf

# Variables of the official checkpoints that are training bookkeeping, not weights.
NON_WEIGHT_VARIABLES = ("global_step",)


def checkpoint_prefix(model_dir: str) -> str:
    """The checkpoint prefix in ``model_dir`` (its ``checkpoint`` file, else ``model``)."""
    latest = tf.train.latest_checkpoint(model_dir)
    if latest:
        return latest
    prefix = os.path.join(model_dir, "model")
    if tf.io.gfile.exists(prefix + ".index"):
        return prefix
    raise FileNotFoundError(f"no TF checkpoint (checkpoint / model.index) in {model_dir}")


def checkpoint_variables(prefix: str) -> Dict[str, Tuple[int, ...]]:
    """Weight variables of a checkpoint: name -> shape (bookkeeping variables left out)."""
    return {
        name: tuple(shape)
        for name, shape in tf.train.list_variables(prefix)
        if name not in NON_WEIGHT_VARIABLES
    }


def keras_variables(model: keras.Model) -> Dict[str, Tuple[int, ...]]:
    """The model's weights under their checkpoint names: ``layer/weight`` -> shape."""
    return {w.path: tuple(w.shape) for w in model.weights}


def load_official_checkpoint(model: keras.Model, prefix: str) -> None:
    """Assign every weight of ``model`` from the TF1 checkpoint at ``prefix``.

    Raises ValueError unless the checkpoint's weight variables and the model's
    weights match one to one, name for name and shape for shape.
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
    reader = tf.train.load_checkpoint(prefix)
    for weight in model.weights:
        weight.assign(reader.get_tensor(weight.path))


def save_official_checkpoint(model: keras.Model, prefix: str, global_step: int = 0) -> str:
    """Write ``model``'s weights as a TF1 name-based checkpoint with the official names."""
    values = {w.path: np.asarray(w.numpy()) for w in model.weights}
    values["global_step"] = np.int64(global_step)
    # A TF1 Saver keys the checkpoint by the given names, as Spleeter's Estimator did.
    with tf.Graph().as_default():
        variables = {name: tf.compat.v1.Variable(value, name=name.replace("/", "__")) for name, value in values.items()}
        saver = tf.compat.v1.train.Saver(var_list=variables)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            return saver.save(session, prefix, write_meta_graph=False)
