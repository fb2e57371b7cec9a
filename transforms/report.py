"""WriteReport: per-track medians -> Table-1-style medians (Markdown, CSV), summary.csv, SDR box plot."""
from __future__ import annotations

import csv
import io
from typing import Optional

import apache_beam as beam
import numpy as np

from stembeam.transforms import storage
from stembeam.transforms.dataset import STEM_NAMES
from stembeam.transforms.evaluate import METRICS


def stems_of(track_rows: list) -> list:
    """The stems with ``ok`` rows in ``track_rows`` (track_medians' rows), in Spleeter's table order (vocals, drums, bass, other, ...), others after by name."""
    present = {row["stem"] for row in track_rows if row["status"] == "ok"}
    return [stem for stem in STEM_NAMES if stem in present] + sorted(present - set(STEM_NAMES))


def overall(track_rows: list) -> dict:
    """Spleeter's Table 1 (SiSEC): per stem, the median over tracks of the per-track medians.

    Args:
        track_rows: track_medians' rows (failed rows are left out).
    Returns:
        ``{stem: {metric: float or None}}``, metrics SDR, SIR, SAR, ISR.
    """
    table = {}
    for stem in stems_of(track_rows):
        table[stem] = {}
        for m in METRICS:
            values = np.array([r[m] for r in track_rows if r["status"] == "ok" and r["stem"] == stem and r[m] is not None])
            table[stem][m] = float(np.median(values)) if values.size else None
    return table


def _fmt(value: Optional[float], digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def table_markdown(table: dict, caption: str) -> str:
    """An overall table (``{stem: {metric: value}}``) as Markdown: metrics as rows, stems as columns
    (the layout of Spleeter's Table 1), 2 decimals, under ``caption``.
    """
    stems = list(table)
    lines = [caption, "", "| metric | " + " | ".join(stems) + " |", "|---|" + "---:|" * len(stems)]
    lines += ["| " + m + " | " + " | ".join(_fmt(table[s][m], 2) for s in stems) + " |" for m in METRICS]
    return "\n".join(lines) + "\n"


def _csv(header: list, rows: list) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def table_csv(table: dict) -> str:
    """An overall table (``{stem: {metric: value}}``) in the Table-1 layout as CSV: ``metric,<stem>...``, 4 decimals."""
    return _csv(["metric"] + list(table), [[m] + [_fmt(table[s][m], 4) for s in table] for m in METRICS])


def summary_csv(table: dict) -> str:
    """An overall table (``{stem: {metric: value}}``) as CSV ``stem,SDR,SIR,SAR,ISR``: one row per stem."""
    return _csv(["stem", *METRICS], [[stem] + [_fmt(table[stem][m], 4) for m in METRICS] for stem in table])


def track_table_csv(track_rows: list) -> str:
    """track_medians' rows as CSV ``track_id,split,stem,windows,SDR,SIR,SAR,ISR,status,error``, sorted by track and stem."""
    rows = sorted(track_rows, key=lambda r: (r["track_id"], r["stem"] or ""))
    return _csv(
        ["track_id", "split", "stem", "windows", *METRICS, "status", "error"],
        [[r["track_id"], r["split"] or "", r["stem"] or "", r["windows"], *(_fmt(r[m], 4) for m in METRICS), r["status"], r["error"] or ""] for r in rows],
    )


def track_table_markdown(track_rows: list, caption: str) -> str:
    """track_medians' ok rows as a Markdown table under ``caption``, then a list of the tracks not evaluated and why."""
    ok = sorted((r for r in track_rows if r["status"] == "ok"), key=lambda r: (r["track_id"], r["stem"]))
    lines = [caption, "", "| track | stem | " + " | ".join(METRICS) + " |", "|---|---|" + "---:|" * len(METRICS)]
    lines += [f"| {r['track_id']} | {r['stem']} | " + " | ".join(_fmt(r[m], 2) for m in METRICS) + " |" for r in ok]
    failed = [r for r in track_rows if r["status"] != "ok"]
    if failed:
        lines += ["", "Not evaluated:", ""] + [f"- {r['track_id']}: {r['error']}" for r in failed]
    return "\n".join(lines) + "\n"


def sdr_boxplot_png(track_rows: list, title: str) -> bytes:
    """Box plot of the per-track median SDR for each stem, every track drawn as a dot.

    Args:
        track_rows: track_medians' rows.
        title: the plot's title.
    Returns:
        The PNG's bytes.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stems = stems_of(track_rows)
    values = [[r["SDR"] for r in track_rows if r["status"] == "ok" and r["stem"] == stem and r["SDR"] is not None] for stem in stems]
    figure, axes = plt.subplots(figsize=(max(6.0, 1.6 * len(stems) + 1.5), 4.2), dpi=120)
    axes.boxplot(values, showfliers=False, widths=0.5)
    axes.set_xticks(range(1, len(stems) + 1), stems)
    jitter = np.random.default_rng(0)
    for k, found in enumerate(values, start=1):
        axes.scatter(k + jitter.uniform(-0.12, 0.12, len(found)), found, s=14, alpha=0.7, color="tab:blue", zorder=3)
    axes.axhline(0.0, color="grey", linewidth=0.6)
    axes.set_ylabel("SDR (dB), per-track median over 1 s windows")
    axes.set_title(title, fontsize=9)
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png")
    plt.close(figure)
    return out.getvalue()


class _WriteFiles(beam.DoFn):
    def __init__(self, output: str, description: str):
        self._output, self._description = output, description

    def process(self, track_rows):
        folder = storage.join(self._output, "evaluation")
        table = overall(track_rows)
        tracks = len({r["track_id"] for r in track_rows if r["status"] == "ok"})
        failed = len({r["track_id"] for r in track_rows if r["status"] != "ok"})
        caption = (
            f"Median over {tracks} tracks of the per-track medians (BSS Eval v4, museval, 1 s windows); {self._description}"
            + (f"; {failed} tracks not evaluated" if failed else "")
        )
        files = {
            storage.join(folder, "table.md"): table_markdown(table, caption),
            storage.join(folder, "table.csv"): table_csv(table),
            storage.join(folder, "track_medians.csv"): track_table_csv(track_rows),
            storage.join(folder, "track_medians.md"): track_table_markdown(track_rows, f"Per-track medians; {self._description}"),
            storage.join(self._output, "summary.csv"): summary_csv(table),
        }
        for uri, text in files.items():
            storage.write_bytes_atomic(uri, text.encode("utf-8"))
        boxplot = storage.join(folder, "sdr_boxplot.png")
        if table:
            storage.write_bytes_atomic(boxplot, sdr_boxplot_png(track_rows, f"SDR per stem: {self._description}, {tracks} tracks"))
        else:
            storage.delete([boxplot])  # an earlier run's plot would describe other scores
        yield table


class WriteReport(beam.PTransform):
    """Per-track median rows -> ``{output}/evaluation/{table,track_medians}.{md,csv}``,
    ``evaluation/sdr_boxplot.png`` and ``{output}/summary.csv``; outputs the overall table.

    Args:
        output: the output folder.
        description: the tables' caption (model, filter, dataset).
    """

    def __init__(self, output: str, description: str):
        super().__init__()
        self._output, self._description = output, description

    def expand(self, track_rows):
        return (
            track_rows
            | "AllTracks" >> beam.combiners.ToList()
            | "WriteFiles" >> beam.ParDo(_WriteFiles(self._output, self._description))
        )
