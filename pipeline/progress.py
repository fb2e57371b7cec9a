"""Live progress of a Beam job, seen from the launcher: a background thread counts the job's
progress marks (transforms/progress.py) every few seconds while ``pipeline.run()`` runs.

On a terminal one line updates in place (tqdm); otherwise a plain line every
``--progress_interval`` seconds:
``progress: 12/40 tracks (1 failed), 6.0 of 20.0 min of audio, 28.1x real time, ETA 0:01:10``.

Minutes of audio: a track's own length once finished; before that the manifest's ``duration``
when given, else the mean length of the tracks finished so far (the total is then shown as
``~``, and as ``?`` before any track is finished). Tracks an earlier run finished count as done
at once but not in the speed; the speed is audio separated by this run per second of wall time
since the job started (start-up included); the ETA is the remaining audio at that speed.
"""
from __future__ import annotations

import datetime
import sys
import threading
import time
from typing import Callable, Optional

from stembeam.transforms.progress import DECODED, DONE, FAILED, SKIPPED, Tally, mark_key

TTY_POLL_SECONDS = 2.0
BAR_STEPS = 1000


def clock(seconds: Optional[float]) -> str:
    return "?" if seconds is None else str(datetime.timedelta(seconds=int(round(seconds))))


class Status:
    """One snapshot: counts, minutes, speed and ETA of ``total`` tracks whose known lengths are
    ``lengths`` ``{track key: seconds or None}``."""

    def __init__(self, tally: Tally, total: int, lengths: dict, elapsed: float):
        self.total, self.elapsed = total, elapsed
        self.done, self.skipped, self.failed = tally.count(DONE), tally.count(SKIPPED), tally.count(FAILED)
        self.finished = min(total, self.done + self.skipped + self.failed)
        finished_keys = tally.finished_keys()
        decoded = tally.decoded()
        waiting = {key: decoded.get(key, sec) for key, sec in lengths.items() if key not in finished_keys}
        waiting.update({key: sec for key, sec in decoded.items() if key not in finished_keys})
        self.audio_done = tally.seconds(DONE, SKIPPED)
        self.separated = tally.seconds(DONE)
        known = [sec for _, status, sec in tally.marks.values() if status in (DONE, SKIPPED, DECODED) and sec]
        mean = sum(known) / len(known) if known else None
        left = max(0, total - self.finished)
        # rows without a usable track (malformed) have no length: unknown until marked
        lengths_left = list(waiting.values())[:left] + [None] * max(0, left - len(waiting))
        self.estimated = any(sec is None for sec in lengths_left)
        if self.estimated and mean is None:
            self.total_audio = None
        else:
            self.total_audio = tally.seconds(DONE, SKIPPED) + sum(mean if sec is None else sec for sec in lengths_left)
        self.remaining_audio = None if self.total_audio is None else max(0.0, self.total_audio - self.audio_done)
        self.speed = self.separated / elapsed if elapsed > 0 and self.separated > 0 else None
        if self.finished >= total:
            self.eta = 0.0
        elif self.speed and self.remaining_audio is not None:
            self.eta = self.remaining_audio / self.speed
        else:
            self.eta = None

    def fraction(self) -> float:
        """How full the bar is: audio done of the total when known (long and short tracks
        weigh what they cost), else tracks finished."""
        if self.finished >= self.total:
            return 1.0
        if self.total_audio:
            return min(1.0, self.audio_done / self.total_audio)
        return self.finished / self.total if self.total else 1.0

    def detail(self) -> str:
        """``(3 already done, 1 failed)``"""
        return "(" + (f"{self.skipped} already done, " if self.skipped else "") + f"{self.failed} failed)"

    def counts(self) -> str:
        return f"{self.finished}/{self.total} tracks {self.detail()}"

    def audio(self) -> str:
        total = "?" if self.total_audio is None else ("~" if self.estimated else "") + f"{self.total_audio / 60:.1f}"
        speed = "?" if self.speed is None else f"{self.speed:.1f}"
        return f"{self.audio_done / 60:.1f} of {total} min of audio, {speed}x real time, ETA {clock(self.eta)}"

    def line(self) -> str:
        return f"progress: {self.counts()}, {self.audio()}"


class Monitor:
    """``with Monitor(count, total, lengths, interval):`` around ``pipeline.run()`` and its wait.

    ``count()`` -> Tally of the marks so far; ``lengths``: ``{track id: manifest seconds or
    None}`` of the tracks to do (``total`` may be larger: rows without a usable id). A final
    line is shown when the block ends without an exception. ``interval`` 0: nothing shown.
    """

    def __init__(self, count: Callable[[], Tally], total: int, lengths: dict, interval: float = 30.0, stream=None, tty: Optional[bool] = None):
        self._count, self.total, self._interval = count, total, interval
        self._lengths = {mark_key(track_id): sec for track_id, sec in lengths.items()}
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty() if tty is None else tty
        self._stop = threading.Event()
        self._thread = None
        self._bar = None
        self.status: Optional[Status] = None
        self.started = time.monotonic()

    def snapshot(self) -> Status:
        try:
            tally = self._count()
        except Exception:  # noqa: BLE001 - a failed listing (e.g. transient gs:// error) skips one update
            tally = Tally() if self.status is None else None
        if tally is not None:
            self.status = Status(tally, self.total, self._lengths, time.monotonic() - self.started)
        return self.status

    def _show(self, status: Status) -> None:
        if self._bar is not None:
            self._bar.n = round(BAR_STEPS * status.fraction())
            self._bar.set_description_str(f"{status.counts()}, {status.audio()}", refresh=False)
            self._bar.refresh()
        else:
            print(status.line(), file=self._stream, flush=True)

    def _run(self) -> None:
        wait = min(self._interval, TTY_POLL_SECONDS) if self._tty else self._interval
        while not self._stop.wait(wait):
            self._show(self.snapshot())

    def __enter__(self) -> "Monitor":
        self.started = time.monotonic()
        if self._interval > 0:
            if self._tty:
                from tqdm import tqdm

                self._bar = tqdm(
                    total=BAR_STEPS, file=self._stream, dynamic_ncols=True,
                    bar_format="{percentage:3.0f}%|{bar}| {desc}",  # desc: the status line
                )
            self._thread = threading.Thread(target=self._run, name="stembeam-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, kind, error, trace) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        status = self.snapshot()
        if kind is None and self._interval > 0:
            self._show(status)
        if self._bar is not None:
            self._bar.close()
