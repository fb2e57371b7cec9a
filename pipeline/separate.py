"""``stembeam separate``: Spleeter-compatible separation of single files, in one process."""
from __future__ import annotations

import os
import sys
from typing import Dict, List, Sequence

from stembeam.model.audio import AudioDecodeError, AudioEncodeError
from stembeam.model.separator import DEFAULT_FILENAME_FORMAT, Separator, stem_path


class FilenameFormatError(ValueError):
    """A filename format that cannot be used for this run (refused before any work)."""


class FilenameCollisionError(FilenameFormatError):
    """A filename format that puts two stems on one path; the message names the format and the paths."""


def planned_paths(files: Sequence[str], output_dir: str, instruments: Sequence[str], codec: str, filename_format: str) -> Dict[str, str]:
    """``{path: "file (instrument)"}`` of every stem to write; raises FilenameCollisionError when
    two stems (of one input, or of two inputs) would land on one path, before anything is written."""
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
            owners.setdefault(os.path.normcase(target), []).append(f"{audio_path} ({instrument})")
    clashes = {path: stems for path, stems in owners.items() if len(stems) > 1}
    if clashes:
        listed = "; ".join(f"{path} <- {', '.join(stems)}" for path, stems in sorted(clashes.items()))
        hint = "" if "{instrument}" in filename_format else " (it has no {instrument})"
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
) -> List[str]:
    """Separate each file into ``output_dir`` (stembeam.Separator.separate_to_file); returns one
    error line per file that failed.

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
            separator.separate_to_file(path, output_dir, codec, bitrate, filename_format, offset, duration, bit_depth)
        except (AudioDecodeError, AudioEncodeError, ValueError, OSError) as error:
            message = str(error) if str(error).startswith(str(path)) else f"{path}: {error}"
            errors.append(message)
            report(f"error: {message}")
    return errors
