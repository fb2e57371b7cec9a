"""``stembeam report OUTPUT`` (and ``--report`` on ``pipeline`` and ``features``): write
``{OUTPUT}/report/``, a web page of a finished output that opens from a plain folder (pipeline/report_page.py
builds it from the output's tables; this module reads them and writes the files, local or gs://)."""
from __future__ import annotations

import concurrent.futures
import datetime
import logging
import sys
import time

from stembeam.transforms import storage

LOGGER = logging.getLogger("stembeam.report")
REPORT_FOLDER = "report"
MISSING_EXTRA = "stembeam report needs plotly: pip install 'stembeam[report]'"
WRITERS = 8  # files written at once (a gs:// report is one object per file)


class ReportError(SystemExit):
    """The report cannot be written: one line for the user, exit code 1."""


def plotly_bundle() -> tuple:
    """``(plotly.min.js bytes, its version)`` from the installed ``plotly`` package (ReportError
    naming the extra when it is missing): the page loads it from its own folder, never a CDN."""
    try:
        from plotly.offline import get_plotlyjs, get_plotlyjs_version
    except ImportError:
        raise ReportError(MISSING_EXTRA) from None
    return get_plotlyjs().encode("utf-8"), get_plotlyjs_version()


def check_available() -> None:
    """ReportError now, before a job runs for an hour, when ``--report`` could not be honoured."""
    import importlib.util

    if importlib.util.find_spec("plotly") is None:
        raise ReportError(MISSING_EXTRA)


def report_root(output: str) -> str:
    return storage.join(output, REPORT_FOLDER)


def write_report(output: str, run_started: datetime.datetime | None = None, tracks_per_shard: int | None = None, run_flags=()) -> str:
    """Read ``output``'s tables once (the frames table batch by batch) and write its report under
    ``{output}/report/`` (files of an earlier report that this one does not have are removed).
    ``run_started`` and ``run_flags``: the start and the flags of the run that just ended, when
    known; ``tracks_per_shard``: see report_page.PageSettings. Returns the uri of ``index.html``."""
    from stembeam import __version__
    from stembeam.pipeline.outputs import read_tables, table_batches
    from stembeam.pipeline.report_page import PageSettings, build_report

    plotly_js, plotly_version = plotly_bundle()
    started = time.monotonic()
    try:
        tables = read_tables(output, frames=False)
    except FileNotFoundError as error:
        raise ReportError(f"stembeam report: {error}") from None
    settings = PageSettings(output=output, run_started=run_started, plotly_js=plotly_js, plotly_version=plotly_version, version=__version__,
                            run_flags=tuple(run_flags), **({"tracks_per_shard": tracks_per_shard} if tracks_per_shard else {}))
    frames = table_batches(output, "frames", ("track_id", "source", "frame_hop_s", "rms_db", "f0_hz", "short_term_hop_s", "short_term_lufs"))
    root = report_root(output)
    targets, pending = set(), []
    with concurrent.futures.ThreadPoolExecutor(WRITERS) as pool:
        for name, data in build_report(tables, settings, frames):
            uri = storage.join(root, *name.split("/"))
            targets.add(uri)
            pending.append(pool.submit(storage.write_bytes_atomic, uri, data))
            if len(pending) >= 4 * WRITERS:  # a few files in flight: the report is never held whole
                pending.pop(0).result()
        for future in pending:
            future.result()
    # The folder is rewritten whole: what an earlier report had and this one has not (more
    # shards, a file of an earlier layout) goes.
    folders = {root}
    for uri in targets:
        parent = uri.rsplit("/", 1)[0]
        while parent not in folders and "/" in parent:
            folders.add(parent)
            parent = parent.rsplit("/", 1)[0]
    found = [*storage.list_matching(root, "*"), *storage.list_matching(root, "*", "*"), *storage.list_matching(root, "data", "tracks", "*")]
    storage.delete(sorted({uri for uri in found if uri not in targets and uri not in folders}))
    index = storage.join(root, "index.html")
    LOGGER.debug("report written in %.1f s (%d files): %s", time.monotonic() - started, len(targets), index)
    return index


def run(args) -> int:
    """``stembeam report OUTPUT``: print where the page is."""
    index = write_report(args.output)
    print(f"stembeam report: {index}", file=sys.stderr)
    return 0
