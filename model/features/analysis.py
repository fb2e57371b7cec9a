"""``analyse_track``: every source of a track read block by block into loudness, spectral,
rhythm, vocal and tonal features: one row per source, one per track, optional frame series.

Memory per source: one decoded block (BLOCK_S) plus per-frame series of a few floats per
23 ms frame (and 8 bytes per 10 ms for loudness gating), whatever the track's length.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import Callable, Optional

import numpy as np
import soundfile
import soxr

from stembeam.model.decode import AudioDecodeError, decode_blocks
from stembeam.model.features import FEATURE_VERSION
from stembeam.model.features.envelope import envelope_db
from stembeam.model.features.framing import ANALYSIS_RATE, FRAME_S, Framer
from stembeam.model.features.loudness import LoudnessMeter, TICK_S
from stembeam.model.features.rhythm import OnsetEnvelope, onset_rate_hz, tempo_and_beats
from stembeam.model.features.schema import SOURCE_COLUMNS, TRACK_COLUMNS
from stembeam.model.features.spectral import SpectralStats, mel_db, power_spectrum, rms_db
from stembeam.model.features.tonality import Tonality
from stembeam.model.features.vocals import pitch_frames, pitch_summary, vocal_activity

LOGGER = logging.getLogger("stembeam.features")

MIXTURE, VOCALS, ACCOMPANIMENT, DRUMS = "mixture", "vocals", "accompaniment", "drums"
BLOCK_S = 10.0  # seconds decoded at a time
DECODE_RATE = 44100  # rate of what ffmpeg decodes (files soundfile reads keep their own rate)
SHORT_TERM_STEP_TICKS = 10  # short-term loudness series: one value per 100 ms
TEMPO_SOURCES = (DRUMS, ACCOMPANIMENT, MIXTURE)


@dataclasses.dataclass(frozen=True)
class SourceInput:
    """A source to analyse (frozen).

    Attributes:
        uri: its file (local or remote).
        offset, duration: the span to read, in seconds (a mixture cut as the manifest row cut
            it; duration None: to the end).
        stream: one audio stream of a multi-stream file, or None.
    """

    uri: str
    offset: float = 0.0
    duration: Optional[float] = None
    stream: Optional[int] = None


@dataclasses.dataclass
class TrackFeatures:
    """What analyse_track gives for one track.

    Attributes:
        sources: rows of the ``sources`` table (one per source).
        track: the ``tracks`` table's row.
        frames: rows of the ``frames`` table (empty unless asked for).
        short_term: ``{source: [m] float}`` short-term LUFS every 100 ms (-inf for silence),
            for plot_track.
        duration_s: the track's length.
    """

    sources: list
    track: dict
    frames: list
    short_term: dict  # {source: [m] LUFS every 100 ms, -inf for silence}
    duration_s: float


def read_blocks(path: str, offset: float = 0.0, duration: Optional[float] = None, stream: Optional[int] = None):
    """Open a local file for block-by-block reading: mono/stereo files libsndfile reads (wav, flac,
    ogg, mp3...) at their own rate; anything else through ffmpeg, stereo at 44.1 kHz.

    Args:
        path: a local file.
        offset, duration: the span in seconds (duration None: to the end).
        stream: one audio stream of a multi-stream file (read through ffmpeg), or None.
    Returns:
        ``(sample_rate, channels, iterator of [k, channels] float32 blocks)``.
    Raises:
        AudioDecodeError naming the file.
    """
    handle = None
    if stream is None:
        try:
            handle = soundfile.SoundFile(path)
        except Exception:  # noqa: BLE001 - libsndfile cannot read it: ffmpeg may (and names the reason if not)
            handle = None
        if handle is not None and (handle.channels > 2 or handle.frames <= 0):
            handle.close()
            handle = None
    if handle is None:
        return DECODE_RATE, 2, decode_blocks(path, DECODE_RATE, offset, duration, stream)

    def blocks():
        with handle:
            rate = handle.samplerate
            start = int(round(offset * rate))
            remaining = handle.frames - start if duration is None else min(handle.frames - start, int(round(duration * rate)))
            if start:
                handle.seek(min(start, handle.frames))
            step = int(BLOCK_S * rate)
            while remaining > 0:
                block = handle.read(min(step, remaining), dtype="float32", always_2d=True)
                if block.shape[0] == 0:
                    break
                if not np.all(np.isfinite(block)):
                    raise AudioDecodeError(path, "decoded audio contains NaN or Inf")
                remaining -= block.shape[0]
                yield block

    return handle.samplerate, handle.channels, blocks()


def mono_mix(block: np.ndarray) -> np.ndarray:
    """The mean of the channels: ``block [k, channels]`` -> ``[k]`` float32."""
    if block.shape[1] == 2:
        # (l + r) / 2, rounded once as the matrix product rounds l / 2 + r / 2, several times faster than numpy's mean over a 2-wide axis.
        return np.add(block[:, 0], block[:, 1]) * np.float32(0.5)
    return block @ np.full(block.shape[1], 1.0 / block.shape[1], np.float32)


class SourceAnalyser:
    """Streams one source: ``write`` its ``[k, channels]`` blocks, then ``finish()``, then ``row()``.

    After ``finish`` it holds ``frame_db [frames]`` (dBFS), ``onset_envelope [frames]``, ``f0
    [frames]`` (Hz, NaN unvoiced; None without ``pitch``), ``duration_s``, ``loudness``
    (LoudnessMeter) and ``tonality`` (Tonality, or None).

    Args:
        sample_rate: the blocks' rate (resampled to ANALYSIS_RATE, 22.05 kHz, for the frames).
        channels: the blocks' channels.
        pitch: also the vocal pitch (pYIN, slow).
        tonality: also the chroma and tuning for the key.
    """

    def __init__(self, sample_rate: int, channels: int, pitch: bool = False, tonality: bool = False):
        self.sample_rate = sample_rate
        self.loudness = LoudnessMeter(sample_rate, channels)
        self._resampler = None if sample_rate == ANALYSIS_RATE else soxr.ResampleStream(sample_rate, ANALYSIS_RATE, 1, dtype="float32")
        self._framer = Framer()
        self.spectral = SpectralStats()
        self.onsets = OnsetEnvelope()
        self.tonality = Tonality() if tonality else None
        self._db = []
        self._f0 = [] if pitch else None

    def write(self, block: np.ndarray) -> None:
        """Feed ``block [k, channels]`` float32 samples, full scale 1.0."""
        self.loudness.write(block)
        mono = mono_mix(np.asarray(block, dtype=np.float32))
        if self._resampler is not None:
            mono = self._resampler.resample_chunk(mono)
        self._frames(self._framer.push(mono))

    def _frames(self, y) -> None:
        if y is None:
            return
        power = power_spectrum(y)  # the one STFT of these frames, for every feature below
        magnitude = np.sqrt(power)
        frame_db = rms_db(power)
        mel = mel_db(power)
        self._db.append(frame_db)
        self.spectral.add(y, power, magnitude, mel, frame_db)
        self.onsets.push(mel)
        if self.tonality is not None:
            self.tonality.add(power, magnitude)
        if self._f0 is not None:
            self._f0.append(pitch_frames(y))

    def finish(self) -> "SourceAnalyser":
        """Flush the last frames and fill the per-frame results; returns ``self``."""
        if self._resampler is not None:
            self._frames(self._framer.push(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True)))
        self._frames(self._framer.finish())
        self.frame_db = np.concatenate(self._db) if self._db else np.zeros(0, np.float32)
        self.onset_envelope = self.onsets.finish()
        self.f0 = None if self._f0 is None else (np.concatenate(self._f0) if self._f0 else np.zeros(0, np.float32))
        self.duration_s = self.loudness.samples / self.sample_rate
        return self

    def row(self) -> dict:
        """The source's measures (the ``sources`` table's feature columns)."""
        meter = self.loudness
        return {
            "duration_s": self.duration_s,
            "sample_rate": self.sample_rate,
            "integrated_lufs": meter.integrated_lufs(),
            "loudness_range_lu": meter.loudness_range_lu(),
            "sample_peak_dbfs": meter.sample_peak_dbfs(),
            "rms_dbfs": meter.rms_dbfs(),
            **self.spectral.summary(),
            "onset_rate_hz": onset_rate_hz(self.onset_envelope),
            "envelope_db": envelope_db(self.frame_db),
        }


def analyse_source(path: str, source: SourceInput, pitch: bool = False, tonality: bool = False) -> SourceAnalyser:
    """Read a local file block by block through a SourceAnalyser.

    Args:
        path: the local copy of ``source.uri``.
        source: SourceInput (its span and stream).
        pitch, tonality: as SourceAnalyser.
    Returns:
        The finished SourceAnalyser.
    Raises:
        AudioDecodeError naming the file (no samples, unreadable).
    """
    rate, channels, blocks = read_blocks(path, source.offset, source.duration, source.stream)
    analyser = SourceAnalyser(rate, channels, pitch, tonality)
    with contextlib.closing(blocks):
        for block in blocks:
            analyser.write(block)
    if analyser.loudness.samples == 0:
        raise AudioDecodeError(path, "no audio samples decoded")
    return analyser.finish()


def _tonality_sources(names) -> list:
    """The accompaniment, else the non-vocal stems (their chroma energies summed), else the mixture."""
    if ACCOMPANIMENT in names:
        return [ACCOMPANIMENT]
    others = [n for n in names if n not in (MIXTURE, VOCALS)]
    return others or ([MIXTURE] if MIXTURE in names else [])


def _reason(uri: str, error: Exception) -> str:
    if isinstance(error, AudioDecodeError):
        return f"{uri}: {error.reason}"
    text = str(error)
    return text if text.startswith(uri) else f"{uri}: {type(error).__name__}: {error}"


def _series(values: np.ndarray, digits: int = 2) -> list:
    """A float series as a JSON/Parquet list: rounded, NaN and +-inf as None."""
    return [round(float(v), digits) if np.isfinite(v) else None for v in values]


def _empty_source_row(track_id: str, name: str, uri: str, status: str, error: Optional[str]) -> dict:
    row = dict.fromkeys(SOURCE_COLUMNS)
    row.update(track_id=track_id, source=name, source_uri=uri, status=status, error=error, feature_version=FEATURE_VERSION)
    return row


def analyse_track(
    track_id: str, sources: dict, vocal_pitch: bool = False, frames: bool = False, localise: Callable = contextlib.nullcontext
) -> TrackFeatures:
    """Analyse the sources (``mixture`` and stems) of one track.

    A source that cannot be read or analysed gets a ``status=error`` row naming the
    file and the reason; the other sources and the track-level features still get computed.
    Tempo comes from drums, else accompaniment, else mixture; vocal activity and pitch from
    ``vocals``; key from the accompaniment, else the summed non-vocal stems, else the mixture.

    Args:
        track_id: the track's id (in every row).
        sources: ``{name: SourceInput}``.
        vocal_pitch: the vocals' pitch (pYIN) too.
        frames: the ``frames`` table's rows too.
        localise: ``localise(uri)``, a context manager giving a local path for a uri (default:
            the uri itself).
    Returns:
        TrackFeatures.
    """
    tonal = set(_tonality_sources(sources))
    done, errors, rows = {}, {}, {}
    for name in sorted(sources, key=lambda n: (n != MIXTURE, n)):
        source = sources[name]
        row = _empty_source_row(track_id, name, source.uri, "ok", None)
        try:
            with localise(source.uri) as path:
                analyser = analyse_source(path, source, pitch=vocal_pitch and name == VOCALS, tonality=name in tonal)
            row.update(analyser.row())
            done[name] = analyser
        except Exception as error:  # noqa: BLE001 - one bad source is a row, not a lost track
            errors[name] = _reason(source.uri, error)
            row.update(status="error", error=errors[name])
        rows[name] = row
    mixture = done.get(MIXTURE)
    for name, analyser in done.items():
        # share_db: 10 log10 of the source's mean square over the mixture's, dB (per sample and
        # channel: a mono mixture, its dual-mono copy and a 48 kHz copy give the same share).
        if mixture is not None and mixture.loudness.mean_square > 0 and analyser.loudness.mean_square > 0:
            rows[name]["share_db"] = float(10 * np.log10(analyser.loudness.mean_square / mixture.loudness.mean_square))
    duration = max((a.duration_s for a in done.values()), default=0.0)
    track = _track_row(track_id, done, errors, tonal, vocal_pitch, duration)
    frame_rows = _frame_rows(track_id, done, track) if frames else []
    short_term = {name: a.loudness.short_term_lufs(SHORT_TERM_STEP_TICKS) for name, a in done.items()}
    return TrackFeatures([rows[n] for n in sorted(rows)], track, frame_rows, short_term, duration)


def _track_row(track_id: str, done: dict, errors: dict, tonal: set, vocal_pitch: bool, duration: float) -> dict:
    row = dict.fromkeys(TRACK_COLUMNS)
    row.update(track_id=track_id, feature_version=FEATURE_VERSION, beat_times_s=[], vocal_segments=None)
    tempo_source = next((name for name in TEMPO_SOURCES if name in done), None)
    if tempo_source is not None:
        tempo, beats = tempo_and_beats(done[tempo_source].onset_envelope)
        row.update(tempo_source=tempo_source, tempo_bpm=tempo, beat_times_s=[round(float(b), 4) for b in beats])
    vocals = done.get(VOCALS)
    if vocals is not None:
        active, segments = vocal_activity(vocals.frame_db, vocals.duration_s)
        vocals.vocal_active = active
        row.update(
            vocal_presence_ratio=float(active.mean()) if active.size else 0.0,
            vocal_segments=segments,
            first_vocal_s=segments[0]["start_s"] if segments else None,
        )
        if vocal_pitch:
            row.update(pitch_summary(vocals.f0))
    present = [done[name].tonality for name in sorted(tonal) if name in done]
    if present:
        total = Tonality()
        for part in present:
            total.merge(part)
        row.update(total.summary(), tonality_source="+".join(name for name in sorted(tonal) if name in done))
    row["status"] = "error" if errors or not done else "ok"
    row["error"] = "; ".join(errors[name] for name in sorted(errors)) or None
    return row


def _frame_rows(track_id: str, done: dict, track: dict) -> list:
    rows = []
    for name in sorted(done):
        analyser = done[name]
        active = getattr(analyser, "vocal_active", None)
        rows.append({
            "track_id": track_id,
            "source": name,
            "frame_hop_s": FRAME_S,
            "rms_db": _series(analyser.frame_db),
            "vocal_active": None if active is None else [bool(v) for v in active],
            "f0_hz": None if analyser.f0 is None else _series(analyser.f0),
            "short_term_hop_s": SHORT_TERM_STEP_TICKS * TICK_S,
            "short_term_lufs": _series(analyser.loudness.short_term_lufs(SHORT_TERM_STEP_TICKS)),
            "feature_version": FEATURE_VERSION,
            "stems_created_at": None,  # set by the Beam stage (transforms.features) from the metadata rows
        })
    return rows
