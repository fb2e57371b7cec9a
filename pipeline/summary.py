"""The closing summary of a job: its counts (from Beam's metrics, or from the metadata table the
job wrote when the runner reports none), the failed rows it names, the wall time and the exit
status."""
from __future__ import annotations

import datetime
import sys
import time

from stembeam.transforms import storage
from stembeam.transforms.write import METADATA_FILE

# The counters of a separating job (transforms' stembeam:* metrics).
COUNTERS = ("tracks_ok", "tracks_failed", "tracks_skipped", "audio_seconds_separated", "chunks_inferred")
# Exit statuses: 0 every row done (or done earlier); 3 the run finished but some rows failed (1:
# the command failed as a whole, 2: no such model; pipeline.cli).
ROWS_FAILED = 3


def announce(line: str) -> None:
    """A line of the job's summary, on stderr."""
    print(line, file=sys.stderr, flush=True)


def timing(started: float, audio_seconds: float) -> str:
    """``12:03 wall, 28.1x real time``: wall time since ``started`` (time.monotonic())."""
    from stembeam.pipeline.progress import clock

    wall = time.monotonic() - started
    speed = f", {audio_seconds / wall:.1f}x real time" if audio_seconds and wall > 0 else ""
    return f"{clock(wall)} wall{speed}"


def counters(result, names) -> dict | None:
    """``{name: value}`` of the job's ``stembeam`` counters ``names`` (0 when never incremented);
    None when the runner reports no metrics (some portable runners)."""
    counts = {name: 0 for name in names}
    try:
        counters = result.metrics().query()["counters"]
    except Exception:  # noqa: BLE001 - NotImplementedError or a runner's own error: no metrics
        return None
    for counter in counters:
        if counter.key.metric.namespace == "stembeam" and counter.key.metric.name in counts:
            counts[counter.key.metric.name] += counter.committed or counter.attempted or 0
    return counts


def counts_from_metadata(output: str, started: datetime.datetime, samples_per_chunk: int) -> dict:
    """The summary's counts read from the metadata table the job wrote, for runners that report
    no metrics: rows created since ``started`` are this run's, older ok rows came from markers;
    ``samples_per_chunk``: a segment's hop (config.T * config.frame_step)."""
    rows = read_metadata_rows(output)
    ok = {row["track_id"]: row for row in rows if row["status"] == "ok"}
    new = [row for row in ok.values() if row["created_at"] >= started]
    return {
        "tracks_ok": len(new),
        "tracks_skipped": len(ok) - len(new),
        "tracks_failed": sum(row["status"] == "error" for row in rows),
        "audio_seconds_separated": int(round(sum(row["duration_s"] for row in new))),
        "chunks_inferred": sum(-(-round(row["duration_s"] * row["sample_rate"]) // samples_per_chunk) for row in new),
    }


def read_metadata_rows(output: str) -> list:
    """The rows of ``{output}/metadata/``'s table (as written by the last run)."""
    return storage.read_parquet(storage.join(output, "metadata", METADATA_FILE)).to_pylist()


# Failed rows named by a summary (the rest are in the metadata table).
FAILURES_SHOWN = 10


def failure_lines(output: str, count: int) -> list:
    """Lines naming up to FAILURES_SHOWN failed rows of the run with their reasons, and where
    the full list is; [] when ``count`` is 0."""
    if not count:
        return []
    failed = [row for row in read_metadata_rows(output) if row["status"] == "error"]
    lines = [f"  {row['track_id']}: {row['error']}" for row in failed[:FAILURES_SHOWN]]
    table = storage.join(output, "metadata", METADATA_FILE)
    more = f"{len(failed) - FAILURES_SHOWN} more, all " if len(failed) > FAILURES_SHOWN else "all "
    return [f"failed rows ({len(failed)}):", *lines, f"({more}in {table}: rows with status 'error')"]


def exit_status(failed: int, allow_failures: bool) -> int:
    """0: every row done; 3: the run finished but ``failed`` rows failed (0 with
    ``--allow_failures``). A run that fails as a whole ends with 1 (pipeline.cli)."""
    return ROWS_FAILED if failed and not allow_failures else 0




def _feature_rows(output: str) -> list:
    """The rows of ``{output}/features/``'s tracks table (one per track analysed, reused or failed)."""
    files = storage.list_matching(storage.join(output, "features"), "tracks-*.parquet")
    return [row for uri in files for row in storage.read_parquet(uri, columns=["track_id", "status", "error"]).to_pylist()]


def feature_counts(output: str, result=None) -> dict:
    """``{"analysed", "reused", "failed"}`` tracks of the features written under ``output`` by the
    run whose Beam ``result`` says how many it reused (runners without metrics: 0 reused)."""
    rows = _feature_rows(output)
    ok = sum(row["status"] == "ok" for row in rows)
    reused = (counters(result, ("features_tracks_reused",)) or {}).get("features_tracks_reused", 0) if result is not None else 0
    return {"analysed": ok - reused, "reused": reused, "failed": sum(row["status"] != "ok" for row in rows)}


def failed_feature_lines(output: str) -> list:
    """Lines naming up to FAILURES_SHOWN tracks whose features failed, and where the full list is."""
    failed = [row for row in _feature_rows(output) if row["status"] != "ok"]
    if not failed:
        return []
    lines = [f"  {row['track_id']}: {row['error']}" for row in failed[:FAILURES_SHOWN]]
    more = f"{len(failed) - FAILURES_SHOWN} more, all " if len(failed) > FAILURES_SHOWN else "all "
    table = storage.join(output, "features", "tracks-*.parquet")
    return [f"tracks whose features failed ({len(failed)}):", *lines, f"({more}in {table}: rows with status 'error')"]
