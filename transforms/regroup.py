"""RegroupTracks: the spooled segments of each track, gathered and put in order."""
from __future__ import annotations

import apache_beam as beam

from transforms import spool

ERRORS = "errors"


class _Order(beam.DoFn):
    def process(self, element):
        track_id, chunks = element
        chunks = sorted(chunks, key=lambda chunk: chunk.index)
        track, count = chunks[0].track, chunks[0].count
        indices = [chunk.index for chunk in chunks]
        if indices != list(range(count)):
            spool.delete_quietly([chunk.spool for chunk in chunks])
            yield beam.pvalue.TaggedOutput(ERRORS, (track_id, track.source_uri, f"{track.source_uri}: segments {indices} of {count} arrived"))
            return
        yield track, chunks


class RegroupTracks(beam.PTransform):
    """``(track_id, Chunk with spool uri)`` -> ``(Track, its Chunks in order)``; tagged ``errors``.

    Only references cross the shuffle (the signals stay in the spool), so it costs the
    same memory for a 60-minute track as for a 3-minute one.
    """

    def expand(self, parts):
        return (
            parts
            | "GroupByTrack" >> beam.GroupByKey()
            | "Order" >> beam.ParDo(_Order()).with_outputs(ERRORS, main="tracks")
        )
