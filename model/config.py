"""Model configurations: Spleeter's 2, 4 and 5 stems parameters."""
from __future__ import annotations

import dataclasses
import json
import re
from typing import Tuple


_STEM_NAME = re.compile(r"\w[\w.-]{0,63}")
_MODEL_NAME = re.compile(r"\w[\w.:-]{0,127}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything that defines a Spleeter-style separator.

    Shapes used across the package: waveforms are ``[samples, 2]`` float32 at
    ``sample_rate``; spectrogram segments are ``[T, F, 2]``.
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

    @property
    def n_bins(self) -> int:
        """Number of STFT bins (frame_length // 2 + 1)."""
        return self.frame_length // 2 + 1

    @property
    def segment_samples(self) -> int:
        """Samples spanned by the T frames of one segment."""
        return (self.T - 1) * self.frame_step + self.frame_length

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        data = json.loads(text)
        for key in ("instruments", "conv_n_filters"):
            data[key] = tuple(data[key])
        return cls(**data)


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

CONFIGS = {c.name: c for c in (SPLEETER_2STEMS, SPLEETER_4STEMS, SPLEETER_5STEMS)}


def get_config(name: str) -> ModelConfig:
    """Return the configuration for ``spleeter:2stems`` (or ``2stems``), 4 or 5 stems."""
    key = name if name.startswith("spleeter:") else f"spleeter:{name}"
    try:
        return CONFIGS[key]
    except KeyError:
        raise ValueError(f"unknown model configuration {name!r}; known: {sorted(CONFIGS)}") from None
