"""``stembeam separate``: Spleeter-compatible separation of single files, in one process."""
from __future__ import annotations

import os
import sys
import warnings
from typing import Dict, List, Sequence

from stembeam.model.decode import AudioDamageWarning, AudioDecodeError
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


def separate_files(
    files: Sequence[str],
    output_dir: str,
    model: str = "spleeter:2stems",
    model_dir: str | None = None,
    codec: str = "wav",
    bitrate: str = "128k",
    filename_format: str = DEFAULT_FILENAME_FORMAT,
    offset: float = 0.0,
    duration: float | None = None,
    mwf: bool = False,
    mwf_block_frames: int | None = None,
    progress: bool = True,
    precision: str = "float32",
    bit_depth: int | None = None,
    residual: bool = False,
    strict: bool = False,
) -> List[str]:
    """Separate each file into ``output_dir`` (stembeam.Separator.separate_to_file); returns one
    error line per file that failed, and prints a warning line per damaged file (an error with
    ``strict``).

    Raises FilenameCollisionError (nothing written, no model loaded) when ``filename_format``
    maps two stems to one path."""
    from stembeam.model.load import config_for_dir
    from stembeam.model.resolve import resolve_model_dir

    instruments = config_for_dir(resolve_model_dir(model, model_dir), model).instruments
    planned_paths(files, output_dir, instruments, codec, filename_format)
    separator = Separator(model, mwf, precision, model_dir=model_dir, residual=residual, batch_size=4, mwf_block_frames=mwf_block_frames)
    errors: List[str] = []
    iterator, report = files, lambda line: print(line, file=sys.stderr, flush=True)
    if progress and len(files) > 1:
        from tqdm import tqdm

        iterator = tqdm(files, unit="file", file=sys.stderr)
        report = lambda line: tqdm.write(line, file=sys.stderr)  # noqa: E731 - keeps the bar intact
    for path in iterator:
        try:
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always", AudioDamageWarning)
                separator.separate_to_file(path, output_dir, codec, bitrate, filename_format, offset, duration, bit_depth, strict=strict)
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
