"""Model configurations: Spleeter's 2, 4 and 5 stems parameters, and Spleeter's own config JSON."""
from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Optional, Tuple


_STEM_NAME = re.compile(r"\w[\w.-]{0,63}")
_MODEL_NAME = re.compile(r"\w[\w.:-]{0,127}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything that defines a Spleeter-style separator (frozen; see the package docstring's shapes).

    Waveforms are ``[samples, 2]`` float32 at ``sample_rate``; the U-nets see segments
    ``[T, F, n_channels]`` of STFT magnitudes.

    Attributes:
        name: the model's name (``spleeter:2stems``...); becomes a folder name.
        instruments: the S stem names, in the model's order; become file names.
        sample_rate: Hz of the waveforms.
        frame_length, frame_step: the STFT's N (4096) and hop (1024).
        T, F: frames per segment (512) and bins through the U-nets (1024, or 1536 at 16 kHz).
        n_channels: 2 (or 1 for a mono model).
        separation_exponent: the exponent of the ratio masks (2: Wiener-like).
        mask_extension: how masks reach the bins above F: ``zeros`` or ``average``.
        conv_activation, deconv_activation: ``relu``, ``elu`` or ``leaky_relu``.
        conv_n_filters: the 6 encoder filter counts.
        softmax_masks: masks from a softmax across instruments (5 stems) instead of sigmoids.
    Raises:
        ValueError: a name that is not a safe file/folder name, repeated instruments, an unknown
        mask_extension or n_channels.
    """

    name: str
    instruments: Tuple[str, ...]
    sample_rate: int = 44100
    frame_length: int = 4096
    frame_step: int = 1024
    T: int = 512
    F: int = 1024
    n_channels: int = 2
    separation_exponent: float = 2.0
    mask_extension: str = "zeros"
    conv_activation: str = "leaky_relu"
    deconv_activation: str = "relu"
    conv_n_filters: Tuple[int, ...] = (16, 32, 64, 128, 256, 512)
    softmax_masks: bool = False

    def __post_init__(self):
        # Stem names become file names and the model name a folder name: nothing may climb out.
        for instrument in self.instruments:
            if not isinstance(instrument, str) or not _STEM_NAME.fullmatch(instrument):
                raise ValueError(f"instrument name {instrument!r}: use letters, digits, '_', '.', '-' (not starting with '.' or '-')")
        if len(set(self.instruments)) != len(self.instruments):
            raise ValueError(f"instrument names repeat: {list(self.instruments)}")
        if not isinstance(self.name, str) or not _MODEL_NAME.fullmatch(self.name):
            raise ValueError(f"model name {self.name!r}: use letters, digits, '_', '.', ':', '-' (not starting with '.' or '-')")
        self._check_values()

    @property
    def n_bins(self) -> int:
        """Number of STFT bins, ``frame_length // 2 + 1`` (2049)."""
        return self.frame_length // 2 + 1

    @property
    def segment_samples(self) -> int:
        """Samples spanned by the T frames of one segment, ``L = (T - 1) * hop + N``."""
        return (self.T - 1) * self.frame_step + self.frame_length

    def _check_values(self):
        if self.mask_extension not in MASK_EXTENSIONS:
            raise ValueError(f"mask_extension {self.mask_extension!r}: choose one of {', '.join(MASK_EXTENSIONS)}")
        if self.n_channels not in (1, 2):
            raise ValueError(f"n_channels {self.n_channels}: 1 (mono model) or 2")

    def to_json(self) -> str:
        """The configuration as stembeam's JSON (``stembeam.json``; read back by from_json)."""
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        """Parse a configuration JSON.

        Args:
            text: stembeam's own JSON (``stembeam.json``), or Spleeter's configuration JSON.
        Returns:
            ModelConfig.
        Raises:
            ValueError: values a ModelConfig refuses, or a Spleeter configuration stembeam cannot
            run (see from_spleeter); KeyError for stembeam JSON without ``instruments``.
        """
        data = json.loads(text)
        if is_spleeter_config(data):
            return from_spleeter(data)[0]
        for key in ("instruments", "conv_n_filters"):
            data[key] = tuple(data[key])
        return cls(**data)


# Spleeter's _extend_mask: bins above F get zeros, or each frame's mean mask over the F bins.
MASK_EXTENSIONS = ("zeros", "average")


SPLEETER_2STEMS = ModelConfig(
    name="spleeter:2stems",
    instruments=("vocals", "accompaniment"),
    conv_activation="leaky_relu",
    deconv_activation="relu",
)
SPLEETER_4STEMS = ModelConfig(
    name="spleeter:4stems",
    instruments=("vocals", "drums", "bass", "other"),
    conv_activation="elu",
    deconv_activation="elu",
)
SPLEETER_5STEMS = ModelConfig(
    name="spleeter:5stems",
    instruments=("vocals", "piano", "drums", "bass", "other"),
    conv_activation="elu",
    deconv_activation="elu",
    softmax_masks=True,
)

# Spleeter's 16 kHz models (its configs/<base>-16kHz.json): the base model's weights (its
# model_dir is the base's folder), F = 1536 bins (to 16.5 kHz) through the U-nets instead of
# 1024 (11 kHz); every other value, "mask_extension": "zeros" included, is the base config's.
WIDE_BAND_SUFFIX = "-16kHz"
WIDE_BAND_F = 1536


def wide_band(config: ModelConfig) -> ModelConfig:
    """``config`` with Spleeter's 16 kHz band (F = 1536), named ``<name>-16kHz``."""
    name = config.name if config.name.endswith(WIDE_BAND_SUFFIX) else config.name + WIDE_BAND_SUFFIX
    return dataclasses.replace(config, name=name, F=WIDE_BAND_F)


_BASE_CONFIGS = (SPLEETER_2STEMS, SPLEETER_4STEMS, SPLEETER_5STEMS)
CONFIGS = {c.name: c for c in _BASE_CONFIGS + tuple(wide_band(c) for c in _BASE_CONFIGS)}


def official_name(name: str) -> Optional[str]:
    """The official name of ``name``.

    Args:
        name: a model name, with or without ``spleeter:``.
    Returns:
        ``spleeter:<name>`` when it is one of CONFIGS, else None.
    """
    key = name if name.startswith("spleeter:") else f"spleeter:{name}"
    return key if key in CONFIGS else None


def is_wide_band(name: Optional[str]) -> bool:
    """Whether ``name`` is an official 16 kHz model (``spleeter:2stems-16kHz`` or ``2stems-16kHz``, 4 or 5 stems)."""
    return bool(name) and official_name(name) is not None and official_name(name).endswith(WIDE_BAND_SUFFIX)


def weights_name(name: str) -> str:
    """The official model whose weights ``name`` uses.

    Args:
        name: a model name.
    Returns:
        ``2stems`` for ``spleeter:2stems`` and ``spleeter:2stems-16kHz``; any other name as given
        (without ``spleeter:``).
    """
    short = name.split(":", 1)[1] if name.startswith("spleeter:") else name
    return short[: -len(WIDE_BAND_SUFFIX)] if is_wide_band(name) else short


def get_config(name: str) -> ModelConfig:
    """The configuration of an official model.

    Args:
        name: ``spleeter:2stems`` (or ``2stems``), 4 or 5 stems, or their 16 kHz versions
            ``spleeter:2stems-16kHz``...
    Returns:
        ModelConfig.
    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    key = official_name(name)
    if key is None:
        raise ValueError(f"unknown model configuration {name!r}; known: {', '.join(CONFIGS)}")
    return CONFIGS[key]


# --- Spleeter's configuration JSON (configs/*.json, its training configs) -------------------

# Spleeter model functions ("model.type") that are stembeam's U-nets: sigmoid masks per U-net,
# or the U-nets' logits through a softmax across instruments.
SPLEETER_MODEL_TYPES = {"unet.unet": False, "unet.softmax_unet": True}
# Keys Spleeter reads that have no meaning here (its Estimator's and tf.data's knobs).
SPLEETER_IGNORED_KEYS = ("throttle_secs", "save_summary_steps", "chunk_duration", "n_chunks_per_song", "duration")
# Spleeter's training keys that stembeam maps (SpleeterTraining).
SPLEETER_TRAINING_KEYS = (
    "train_csv", "validation_csv", "model_dir", "training_cache", "validation_cache", "batch_size",
    "learning_rate", "train_max_steps", "random_seed", "save_checkpoints_steps", "mix_name", "optimizer", "loss_type",
)
SPLEETER_MODEL_KEYS = (
    "instrument_list", "sample_rate", "frame_length", "frame_step", "T", "F", "n_channels",
    "separation_exponent", "mask_extension", "model",
)


@dataclasses.dataclass(frozen=True)
class SpleeterTraining:
    """The training half of a Spleeter configuration (frozen; paths as written in the JSON).

    Attributes:
        model_dir: the model folder (weights, checkpoints).
        train_csv, validation_csv: the datasets' manifests.
        training_cache, validation_cache: Spleeter's cache folders.
        mix_name: the mixture's column prefix in the manifests (``mix``).
        batch_size, learning_rate, train_max_steps, random_seed, save_checkpoints_steps: as Spleeter.
        ignored: keys of the JSON stembeam does not use.
    """

    model_dir: Optional[str] = None
    train_csv: Optional[str] = None
    validation_csv: Optional[str] = None
    training_cache: Optional[str] = None
    validation_cache: Optional[str] = None
    mix_name: str = "mix"
    batch_size: int = 4
    learning_rate: float = 1e-4
    train_max_steps: int = 1000
    random_seed: int = 0
    save_checkpoints_steps: int = 100
    ignored: Tuple[str, ...] = ()


def is_spleeter_config(data: dict) -> bool:
    """Whether the parsed JSON ``data`` is Spleeter's (it names its stems ``instrument_list``, stembeam's ``instruments``)."""
    return isinstance(data, dict) and "instrument_list" in data and "instruments" not in data


def _conv_activation(name) -> str:
    # Spleeter's _get_conv_activation_layer: ReLU, ELU, anything else LeakyReLU(0.2).
    return {"ReLU": "relu", "ELU": "elu"}.get(str(name), "leaky_relu")


def _deconv_activation(name) -> str:
    # Spleeter's _get_deconv_activation_layer: LeakyReLU(0.2), ELU, anything else ReLU.
    return {"LeakyReLU": "leaky_relu", "ELU": "elu"}.get(str(name), "relu")


def _config_name(data: dict, source: Optional[str]) -> str:
    """A name for the model: its model_dir's (or the file's) base name, as a Keras-safe word."""
    base = os.path.basename(str(data.get("model_dir") or "").rstrip("/")) or os.path.splitext(os.path.basename(source or ""))[0] or "model"
    return "spleeter-config:" + (re.sub(r"[^A-Za-z0-9_.-]+", "_", base) or "model")


def from_spleeter(data: dict, source: Optional[str] = None) -> Tuple[ModelConfig, SpleeterTraining]:
    """Map Spleeter's configuration dict.

    Every key Spleeter reads is mapped or listed in SPLEETER_IGNORED_KEYS; ``model.type`` must be
    ``unet.unet`` or ``unet.softmax_unet``; ``optimizer`` (Adam only) and ``loss_type``
    (``L1_mask`` only) are checked.

    Args:
        data: the parsed JSON.
        source: the file it came from (names the model and the messages), or None.
    Returns:
        ``(ModelConfig, SpleeterTraining)``.
    Raises:
        ValueError naming the key and the value.
    """
    where = f"{source}: " if source else ""
    model = data.get("model") or {}
    kind = model.get("type", "unet.unet")
    if kind not in SPLEETER_MODEL_TYPES:
        raise ValueError(f"{where}model.type {kind!r} is not supported (stembeam has {', '.join(SPLEETER_MODEL_TYPES)})")
    params = model.get("params") or {}
    if data.get("optimizer") not in (None, "Adam"):
        raise ValueError(f"{where}optimizer {data['optimizer']!r} is not supported (stembeam trains with Adam, Spleeter's default)")
    if data.get("loss_type", "L1_mask") != "L1_mask":
        raise ValueError(f"{where}loss_type {data['loss_type']!r} is not supported (stembeam's loss is Spleeter's L1_mask)")
    defaults = ModelConfig(name="defaults", instruments=("x",))
    try:
        config = ModelConfig(
            name=_config_name(data, source),
            instruments=tuple(str(i) for i in data["instrument_list"]),
            sample_rate=int(data.get("sample_rate", defaults.sample_rate)),
            frame_length=int(data.get("frame_length", defaults.frame_length)),
            frame_step=int(data.get("frame_step", defaults.frame_step)),
            T=int(data.get("T", defaults.T)),
            F=int(data.get("F", defaults.F)),
            n_channels=int(data.get("n_channels", defaults.n_channels)),
            separation_exponent=float(data.get("separation_exponent", defaults.separation_exponent)),
            mask_extension=str(data.get("mask_extension", defaults.mask_extension)),
            conv_activation=_conv_activation(params.get("conv_activation")),
            deconv_activation=_deconv_activation(params.get("deconv_activation")),
            conv_n_filters=tuple(int(n) for n in params.get("conv_n_filters", defaults.conv_n_filters)),
            softmax_masks=SPLEETER_MODEL_TYPES[kind],
        )
    except ValueError as error:
        raise ValueError(f"{where}{error}") from None
    if len(config.conv_n_filters) != 6:
        raise ValueError(f"{where}model.params.conv_n_filters must list 6 filter counts")
    known = set(SPLEETER_MODEL_KEYS) | set(SPLEETER_TRAINING_KEYS) | set(SPLEETER_IGNORED_KEYS)
    fields = {f.name for f in dataclasses.fields(SpleeterTraining)} - {"ignored"}
    training = SpleeterTraining(
        **{key: data[key] for key in fields if data.get(key) is not None},
        ignored=tuple(sorted(k for k in data if k in SPLEETER_IGNORED_KEYS or k not in known)),
    )
    return config, training


def load_config_file(path: str) -> Tuple[ModelConfig, Optional[SpleeterTraining]]:
    """Read a configuration JSON file.

    Args:
        path: a local or gs:// path: stembeam's ``stembeam.json``/``config.json`` or Spleeter's
            configuration.
    Returns:
        ``(ModelConfig, SpleeterTraining or None)`` (None for stembeam's JSON).
    Raises:
        ValueError naming the file: not JSON, or neither configuration.
    """
    import tensorflow as tf

    with tf.io.gfile.GFile(path) as handle:
        try:
            data = json.loads(handle.read())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not JSON ({error})") from None
    if is_spleeter_config(data):
        return from_spleeter(data, path)
    try:
        return ModelConfig.from_json(json.dumps(data)), None
    except (KeyError, TypeError) as error:
        raise ValueError(f"{path}: neither a stembeam nor a Spleeter configuration ({error!r})") from None
