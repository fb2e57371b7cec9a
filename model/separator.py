"""``stembeam.Separator``: Spleeter's Python API (``Separator('spleeter:2stems').separate(waveform)``)
over the same separation as ``stembeam separate`` and the corpus job."""
from __future__ import annotations

import os
import string
from typing import Dict

import numpy as np

from stembeam.model.decode import load_audio
from stembeam.model.encode import CODECS, AudioWriter, check_bitrate, check_codec
from stembeam.model.inputs import as_model_input
from stembeam.model.separation import residual_stems, separate_waveform

DEFAULT_FILENAME_FORMAT = "{filename}/{instrument}.{codec}"
FILENAME_FIELDS = ("filename", "foldername", "instrument", "codec")


def check_filename_format(filename_format: str) -> None:
    """Check a Spleeter-style ``filename_format``.

    Args:
        filename_format: a str.format template using only the plain fields ``{filename}``,
            ``{foldername}``, ``{instrument}``, ``{codec}``.
    Raises:
        ValueError: another field, or an attribute, index, conversion or format spec.
    """
    try:
        parts = list(string.Formatter().parse(filename_format))
    except ValueError as error:
        raise ValueError(f"filename format {filename_format!r}: {error}") from None
    for _, field, spec, conversion in parts:
        if field is None:
            continue
        if field not in FILENAME_FIELDS or spec or conversion:
            shown = "{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise ValueError(f"filename format {filename_format!r}: {shown} is not one of the fields " + " ".join("{" + f + "}" for f in FILENAME_FIELDS))


def stem_path(output_dir: str, audio_path: str, instrument: str, codec: str, filename_format: str) -> str:
    """Where a stem goes, as Spleeter's ``filename_format`` says.

    Args:
        output_dir: the folder the stems go under.
        audio_path: the input file (``{filename}``: its name without extension,
            ``{foldername}``: its folder's name).
        instrument: the stem's name (``{instrument}``).
        codec: one of model.encode.CODECS (``{codec}``: its file extension).
        filename_format: the template (see check_filename_format).
    Returns:
        The absolute path of the stem file.
    Raises:
        ValueError: an unknown field, or a name that would leave ``output_dir``.
    """
    check_filename_format(filename_format)
    name = os.path.splitext(os.path.basename(audio_path))[0]
    relative = filename_format.format(
        filename=name,
        instrument=instrument,
        codec=CODECS[codec][0],
        foldername=os.path.basename(os.path.dirname(os.path.abspath(audio_path))),
    )
    root = os.path.abspath(output_dir)
    path = os.path.abspath(os.path.join(root, relative))
    if os.path.commonpath([root, path]) != root:
        raise ValueError(f"{audio_path}: output name {relative!r} leaves {output_dir}")
    return path


class Separator:
    """A model loaded and traced once, then used for any number of calls, from any threads.

    Results are the very samples ``stembeam separate`` writes (before encoding).

    Args:
        model: ``spleeter:2stems`` / ``4stems`` / ``5stems`` (and their ``-16kHz`` variants), a
            model folder or a Spleeter configuration JSON, as ``stembeam separate -p`` takes it.
        mwf: the multichannel Wiener filter instead of soft masks.
        precision: the U-nets' arithmetic: ``float32`` (exact), ``bfloat16``, or ``auto``
            (bfloat16 on a CPU with AMX or a GPU, else float32; see model.precision).
        model_dir: the model's folder, looked at first (model.resolve); ``model`` still
            names the configuration (a 16 kHz name, a configuration JSON).
        residual: the last stem is the mixture minus the others.
        batch_size: segments (``[B, T, F, 2]``, B = batch_size) per U-net call.
        mwf_block_frames: frames per Wiener-filter block (None: a whole segment).
    Raises:
        ModelNotFoundError: no model folder for ``model``; ValueError for a bad precision.
    """

    def __init__(self, model: str = "spleeter:2stems", mwf: bool = False, precision: str = "float32", *, model_dir: str | None = None,
                 residual: bool = False, batch_size: int = 4, mwf_block_frames: int | None = None):
        from stembeam._quiet import quiet

        with quiet():  # TensorFlow's log as it loads and first runs (no GPU factories...): not the user's
            from stembeam.model.load import load_separator

            self.config, self._separator = load_separator(model, model_dir, precision)
            self._separator.warm_up()  # traced here, once, so calls from several threads never trace
        self.model, self.mwf, self.residual = model, mwf, residual
        self._batch_size, self._block = batch_size, mwf_block_frames

    @property
    def instruments(self) -> tuple:
        """Stem names, in the model's order."""
        return self.config.instruments

    @property
    def sample_rate(self) -> int:
        """The stems' sample rate (44100 for Spleeter's models)."""
        return self.config.sample_rate

    def separate(self, waveform: np.ndarray, sample_rate: int = 44100) -> Dict[str, np.ndarray]:
        """Separate an in-memory waveform into its stems.

        The input is taken as ``stembeam separate`` decodes a file: mono is duplicated, stereo
        at the model's rate is used as it is, other rates and channel counts are resampled and
        downmixed by ffmpeg; integer PCM is scaled to [-1, 1). Stems are not clipped (16-bit
        files clip them when written).

        Args:
            waveform: ``[samples]`` or ``[samples, channels]``, float (full scale 1.0) or integer PCM.
            sample_rate: its rate in Hz.
        Returns:
            ``{instrument: [m, 2] float32}`` in ``instruments`` order, at ``self.sample_rate``
            (``m = samples * self.sample_rate / sample_rate``).
        Raises:
            ValueError: a shape, dtype, rate or values that cannot be audio (see as_model_input).
        """
        mix = as_model_input(waveform, sample_rate, self.config.sample_rate)
        return self._separate(mix)

    def _separate(self, mix: np.ndarray) -> Dict[str, np.ndarray]:
        # One song at a time: the inverse STFT uses every core this process may run on, as
        # TensorFlow's U-nets do (the corpus job's workers, one per core, each keep to one).
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        stems = separate_waveform(mix, self._separator, mwf=self.mwf, batch_size=self._batch_size, mwf_block_frames=self._block,
                                  synthesis_threads=cores)
        return residual_stems(stems, mix) if self.residual else stems

    def separate_to_file(self, path: str, destination: str, codec: str = "wav", bitrate: str = "128k",
                         filename_format: str = DEFAULT_FILENAME_FORMAT, offset: float = 0.0, duration: float | None = None,
                         bit_depth: int | None = None, *, strict: bool = False) -> Dict[str, str]:
        """Decode ``path`` (from ``offset`` s, for ``duration`` s), separate it and write each stem
        under ``destination`` as ``filename_format`` says (Spleeter's keys ``{filename}``,
        ``{foldername}``, ``{instrument}``, ``{codec}``); ``codec`` one of model.encode.CODECS;
        ``bit_depth`` 16 (default), 24 or 32 (float) for wav, 24 (default) or 16 for flac.

        The stems appear together or not at all: nothing is left of a file whose decoding,
        separation or writing fails, and no stem is written over the input file. A damaged file
        warns (AudioDamageWarning), or raises with ``strict``.

        Returns:
            ``{instrument: written path}``.
        Raises:
            AudioDecodeError or AudioEncodeError naming the file; ValueError for a codec,
            bitrate, format or span that cannot be used.
        """
        check_codec(codec)
        check_bitrate(codec, bitrate)
        targets = {instrument: stem_path(destination, path, instrument, codec, filename_format) for instrument in self.instruments}
        source = os.path.realpath(path)
        for target in targets.values():
            if os.path.realpath(target) == source:
                raise ValueError(f"{path}: its stem would be written over it ({target}): choose another output or filename format")
        mix = load_audio(path, self.config.sample_rate, offset, duration, strict=strict)
        writers = {}
        try:
            for instrument, signal in self._separate(mix).items():
                writer = writers[instrument] = AudioWriter(targets[instrument], self.config.sample_rate, signal.shape[1], codec, bitrate, bit_depth)
                writer.write(signal)
                writer.finish()
            for writer in writers.values():
                writer.commit()
        except BaseException:
            for instrument, writer in reversed(list(writers.items())):  # the first one made the folder
                writer.abort()
                if os.path.exists(targets[instrument]) and writer.committed:
                    os.remove(targets[instrument])  # a later stem failed to move: none of them stays
            raise
        return targets
