"""``stembeam separate``: Spleeter-compatible separation of single files, in one process."""
from __future__ import annotations

import dataclasses
import os
import sys
import warnings
from typing import Dict, List, Optional, Sequence

from stembeam.model.decode import AudioDamageWarning, AudioDecodeError
from stembeam.model.decode_worker import start_tfio_worker
from stembeam.model.encode import AudioEncodeError
from stembeam.model.separator import DEFAULT_FILENAME_FORMAT, Separator, check_filename_format, stem_path


class FilenameFormatError(ValueError):
    """A filename format that cannot be used for this run (refused before any work)."""


class FilenameCollisionError(FilenameFormatError):
    """A filename format that puts two stems on one path; the message names the format and the paths."""


def planned_paths(files: Sequence[str], output_dir: str, instruments: Sequence[str], codec: str, filename_format: str) -> Dict[str, str]:
    """``{path: "file (instrument)"}`` of every stem to write; raises FilenameFormatError for a
    format with other fields than the documented ones or one that would write over an input
    file, and FilenameCollisionError when two stems (of one input, or of two inputs) would land
    on one path, before anything is written."""
    try:
        check_filename_format(filename_format)
    except ValueError as error:
        raise FilenameFormatError(str(error)) from None
    inputs = {os.path.realpath(path): path for path in files}
    owners: Dict[str, List[str]] = {}
    for audio_path in dict.fromkeys(files):
        for instrument in instruments:
            try:
                target = stem_path(output_dir, audio_path, instrument, codec, filename_format)
            except (KeyError, IndexError) as error:
                raise FilenameFormatError(
                    f"filename format {filename_format!r}: unknown key {error} (keys: {{filename}} {{instrument}} {{codec}} {{foldername}})"
                ) from None
            except ValueError:
                continue  # leaves output_dir: that file's own error, reported when its turn comes
            overwritten = inputs.get(os.path.realpath(target))
            if overwritten is not None:
                raise FilenameFormatError(
                    f"filename format {filename_format!r} under {output_dir} would write {audio_path}'s {instrument} stem over the input "
                    f"file {overwritten}: choose another output folder or format"
                )
            owners.setdefault(os.path.normcase(target), []).append(f"{audio_path} ({instrument})")
    clashes = {path: stems for path, stems in owners.items() if len(stems) > 1}
    if clashes:
        listed = "; ".join(f"{path} <- {', '.join(stems)}" for path, stems in sorted(clashes.items()))
        hint = "" if "{instrument}" in filename_format else " (it has no {instrument})"
        if "{instrument}" in filename_format and "{foldername}" not in filename_format:
            hint = " (inputs of the same name in different folders, as MUSDB's <song>/mixture.wav: add {foldername}, e.g. -f \"{foldername}/{instrument}.{codec}\")"
        raise FilenameCollisionError(f"filename format {filename_format!r}{hint} writes several stems to one path: {listed}")
    return {path: stems[0] for path, stems in owners.items()}


@dataclasses.dataclass(frozen=True)
class SeparateSettings:
    """What ``stembeam separate`` does to every file (its flags; the defaults are Spleeter's).

    Attributes:
        model, model_dir, mwf, mwf_block_frames, precision, residual: the Separator's
            (stembeam.Separator).
        codec, bitrate, filename_format, bit_depth: how stems are written
            (Separator.separate_to_file).
        offset, duration: seconds of each file to separate (duration None: to its end).
        strict: a damaged file is an error rather than a warning.
    """

    model: str = "spleeter:2stems"
    model_dir: Optional[str] = None
    mwf: bool = False
    mwf_block_frames: Optional[int] = None
    precision: str = "float32"
    residual: bool = False
    codec: str = "wav"
    bitrate: str = "128k"
    filename_format: str = DEFAULT_FILENAME_FORMAT
    bit_depth: Optional[int] = None
    offset: float = 0.0
    duration: Optional[float] = None
    strict: bool = False


def separate_files(files: Sequence[str], output_dir: str, settings: SeparateSettings = SeparateSettings(), progress: bool = True) -> List[str]:
    """Separate each file into ``output_dir`` with stembeam.Separator.separate_to_file.

    Args:
        files: audio files, separated one after another.
        output_dir: where ``settings.filename_format`` puts the stems.
        settings: the model, filter and output format (SeparateSettings).
        progress: a progress bar on stderr when there are several files and stderr is a terminal.

    Returns:
        One error line per file that failed (its stems are not left behind). A warning line per
        damaged file is printed on stderr (an error with ``settings.strict``).

    Raises:
        FilenameFormatError (FilenameCollisionError): the format has unknown fields, writes over
            an input or maps two stems to one path; nothing written, no model loaded.
    """
    from stembeam.model.load import config_for_dir
    from stembeam.model.resolve import resolve_model_dir

    instruments = config_for_dir(resolve_model_dir(settings.model, settings.model_dir), settings.model).instruments
    planned_paths(files, output_dir, instruments, settings.codec, settings.filename_format)
    start_tfio_worker(files)  # its TensorFlow import overlaps the model's load
    separator = Separator(settings.model, settings.mwf, settings.precision, model_dir=settings.model_dir, residual=settings.residual,
                          batch_size=4, mwf_block_frames=settings.mwf_block_frames)
    errors: List[str] = []
    iterator, report = files, lambda line: print(line, file=sys.stderr, flush=True)
    if progress and len(files) > 1 and sys.stderr.isatty():  # a bar's \r frames are for a person at a terminal, not a log
        from tqdm import tqdm

        iterator = tqdm(files, unit="file", file=sys.stderr)
        report = lambda line: tqdm.write(line, file=sys.stderr)  # noqa: E731 - keeps the bar intact
    for path in iterator:
        try:
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always", AudioDamageWarning)
                separator.separate_to_file(path, output_dir, settings.codec, settings.bitrate, settings.filename_format, settings.offset,
                                           settings.duration, settings.bit_depth, strict=settings.strict)
            for warning in seen:
                if issubclass(warning.category, AudioDamageWarning):
                    report(f"warning: {warning.message} (stems written; --strict-decoding makes it an error)")
                else:
                    warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
        except (AudioDecodeError, AudioEncodeError, ValueError, OSError) as error:
            message = _file_error(path, error)
            errors.append(message)
            report(f"error: {message}")
    return errors


def _file_error(path: str, error: BaseException) -> str:
    """One line naming the file and the reason (a full disk and other OS errors included)."""
    if isinstance(error, OSError) and not isinstance(error, (AudioDecodeError, AudioEncodeError)):
        reason = f"{error.strerror or error}" + (f" ({error.filename})" if error.filename else "")
        return f"{path}: writing its stems failed: {reason}"
    text = str(error)
    return text if text.startswith(str(path)) else f"{path}: {text}"
