"""Build a ready-to-run Keras separator from a model folder."""
from __future__ import annotations

import hashlib
import os

import keras
import tensorflow as tf

from stembeam.model import checkpoint
from stembeam.model.config import ModelConfig, get_config, is_wide_band, load_config_file, official_name, weights_name, wide_band
from stembeam.model.resolve import is_config_file, resolve_model_dir
from stembeam.model.unet import build_model

CONFIG_FILE = "stembeam.json"
KERAS_FILE = "model.keras"


def config_for_dir(model_dir: str, name: str | None = None) -> ModelConfig:
    """The configuration of a model folder.

    Taken from the configuration file ``name`` when given (stembeam's or Spleeter's JSON), else
    the folder's ``stembeam.json``, else the official config named or implied by its variables.
    A 16 kHz name (``spleeter:2stems-16kHz``...) takes the folder's configuration with F = 1536
    (config.wide_band), as Spleeter's 16 kHz configs take the base model's folder.

    Args:
        model_dir: the model folder (local or gs://).
        name: the model's name or configuration file, or None.
    Returns:
        ModelConfig.
    """
    if name and is_config_file(name):
        return load_config_file(name)[0]
    if is_wide_band(name):
        return wide_band(config_for_dir(model_dir, weights_name(name)))
    path = os.path.join(model_dir, CONFIG_FILE)
    if tf.io.gfile.exists(path):
        with tf.io.gfile.GFile(path) as handle:
            return ModelConfig.from_json(handle.read())
    if name and official_name(name):
        return get_config(name)
    # An official checkpoint folder: each U-net owns 7 convolutions.
    n_convs = sum(1 for v in checkpoint.checkpoint_variables(checkpoint.checkpoint_prefix(model_dir)) if v.endswith("/kernel") and v.startswith("conv2d") and "transpose" not in v)
    return get_config(f"{n_convs // 7}stems")


def loaded_files(model_dir: str) -> list:
    """The files that ``load_model`` reads from a model folder.

    Args:
        model_dir: the model folder.
    Returns:
        Sorted paths: ``stembeam.json`` when present, and ``model.keras`` or else the ``.index`` /
        ``.data-*`` files of the checkpoint prefix the folder's ``checkpoint`` file names.
    """
    names = tf.io.gfile.listdir(model_dir)
    files = [os.path.join(model_dir, CONFIG_FILE)] if CONFIG_FILE in names else []
    if KERAS_FILE in names:
        return sorted(files + [os.path.join(model_dir, KERAS_FILE)])
    folder, stem = os.path.split(checkpoint.checkpoint_prefix(model_dir))
    weights = [os.path.join(folder, name) for name in tf.io.gfile.listdir(folder) if name == f"{stem}.index" or name.startswith(f"{stem}.data-")]
    return sorted(files + weights, key=os.path.basename)


def weights_fingerprint(model_dir: str) -> str:
    """A fingerprint of the weights: it changes when they are retrained in place, whatever their
    size, or when the folder's ``checkpoint`` file names another checkpoint.

    Args:
        model_dir: the model folder.
    Returns:
        Hex sha256 over the name and bytes of each of ``loaded_files(model_dir)``.
    """
    digest = hashlib.sha256()
    for path in loaded_files(model_dir):
        digest.update(os.path.basename(path).encode("utf-8") + b"\0")
        with tf.io.gfile.GFile(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def segment_shape(config: ModelConfig) -> tuple:
    """The U-nets' input ``(T, F, channels)`` for ``config``: what a ``model.keras`` is built for."""
    return (config.T, config.F, config.n_channels)


def keras_file_fits(model_dir: str, config: ModelConfig) -> bool:
    """Whether the folder's ``model.keras`` takes ``config``'s segments as it is.

    Args:
        model_dir: the model folder.
        config: the ModelConfig to run.
    Returns:
        True when there is a ``model.keras`` and the folder's ``stembeam.json`` (if any) has the
        same segment_shape (a 16 kHz name on an 11 kHz export has not).
    """
    if not tf.io.gfile.exists(os.path.join(model_dir, KERAS_FILE)):
        return False
    return not tf.io.gfile.exists(os.path.join(model_dir, CONFIG_FILE)) or segment_shape(config_for_dir(model_dir)) == segment_shape(config)


def load_model(name: str, model_dir: str | None = None):
    """Build the Keras U-nets of a model, with its weights.

    A folder's ``model.keras`` built for other segments than the config's (a 16 kHz name on an
    11 kHz export) gives its weights to a model built for the config: the U-nets' weights do not
    depend on T or F.

    Args:
        name: a model name, folder or configuration JSON (see model.resolve).
        model_dir: the model's folder, looked at first.
    Returns:
        ``(ModelConfig, keras.Model)``: magnitudes ``[B, T, F, 2]`` -> ``[B, T, F, 2, S]``.
    Raises:
        ModelNotFoundError: no folder found; ModelFileError: its weights cannot be read.
    """
    folder = resolve_model_dir(name, model_dir)
    config = config_for_dir(folder, name)
    return config, _keras_model(folder, config)


def _keras_model(folder: str, config):
    """The Keras U-nets of the model in ``folder`` (resolved) for ``config``: load_model's work."""
    keras_path = os.path.join(folder, KERAS_FILE)
    if tf.io.gfile.exists(keras_path):
        try:
            loaded = keras.models.load_model(keras_path, compile=False)
        except Exception as error:  # noqa: BLE001 - Keras' errors for a damaged archive vary (zip, h5, json)
            raise checkpoint.ModelFileError(f"{keras_path}: cannot be read, truncated or corrupt ({type(error).__name__}: {error})") from None
        if tuple(loaded.input_shape[1:]) == segment_shape(config):
            return loaded
        model = build_model(config)
        model.set_weights(loaded.get_weights())
        return model
    model = build_model(config)
    checkpoint.load_official_checkpoint(model, checkpoint.checkpoint_prefix(folder))
    return model


def load_unets(name: str, model_dir: str | None = None, precision: str = "float32"):
    """The U-nets a SegmentSeparator of ``precision`` needs: the Keras model (load_model), or
    where bfloat16 runs on this CPU and the folder holds an official checkpoint, the checkpoint's
    weights alone (checkpoint.CheckpointWeights; the same numbers, without building a Keras model).

    Args:
        name, model_dir: as in load_model.
        precision: the U-nets' arithmetic (model.precision).
    Returns:
        ``(ModelConfig, keras.Model or checkpoint.CheckpointWeights)``.
    Raises:
        as load_model.
    """
    from stembeam.model.precision import effective_precision

    bfloat16 = effective_precision(precision) == "bfloat16"  # first: a bad precision is a ValueError, as before
    folder = resolve_model_dir(name, model_dir)
    config = config_for_dir(folder, name)
    if not bfloat16 or tf.io.gfile.exists(os.path.join(folder, KERAS_FILE)):
        return config, _keras_model(folder, config)
    return config, checkpoint.CheckpointWeights(checkpoint.checkpoint_prefix(folder))


def load_separator(name: str, model_dir: str | None = None, precision: str = "float32"):
    """Load a model ready to separate segments.

    Args:
        name: a model name, folder or configuration JSON (see model.resolve).
        model_dir: the model's folder, looked at first.
        precision: the U-nets' arithmetic (``float32``, ``bfloat16``, ``auto``; model.precision).
    Returns:
        ``(ModelConfig, SegmentSeparator)``.
    Raises:
        ModelNotFoundError, ModelFileError (see load_model); ValueError for a bad precision.
    """
    from stembeam.model.segment_graph import SegmentSeparator

    config, model = load_unets(name, model_dir, precision)
    return config, SegmentSeparator(model, config, precision)
