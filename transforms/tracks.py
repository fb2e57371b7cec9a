"""SeparateTracks: each track decoded, chunked, separated and written within one fused stage.

Batch runners (the DirectRunner, Dataflow) run a stage to its end before a stage after a
shuffle starts, and materialise what crosses it. So nothing heavy crosses one here: a track's
samples, spectrograms and signals live only inside this stage, from its DecodeAndChunk call to
its WriteStems call, and what leaves it is rows and small tuples. Every track is written (stems,
then its marker) as soon as its last segment is separated, while other tracks are still being
inferred; RunInference still batches segments of different tracks together.
"""
from __future__ import annotations

import apache_beam as beam

from stembeam.transforms.audio import ERRORS, FINISHED_EARLIER, LENGTHS, DecodeAndChunk, Decoding
from stembeam.transforms.inference import SeparateChunks, Separation
from stembeam.transforms.stem_files import StemFiles
from stembeam.transforms.write import WriteStems


class SeparateTracks(beam.PTransform):
    """Track -> ``{"rows": metadata rows of written tracks (and error rows of tracks whose
    stems could not be written), "errors": (track_id, uri, reason) of undecodable tracks,
    "finished_earlier": stored rows (JSON) of tracks an earlier run finished, "lengths":
    (track_id, seconds)}``.

    ``separation``: the model and how it runs; ``files``: where and how the stems are written
    and resumed; ``decoding``: how sources are decoded. A resource hint given to this transform
    (an accelerator) covers the whole chain, decoding included, so it all runs in the
    accelerator's environment and only those small outputs leave it (runners do not fuse across
    environments).

    Args:
        separation: Separation.
        files: StemFiles.
        decoding: Decoding.
    """

    def __init__(self, separation: Separation, files: StemFiles, decoding: Decoding = Decoding()):
        super().__init__()
        self._separation, self._files, self._decoding = separation, files, decoding

    def expand(self, tracks):
        config = self._separation.model.config
        decoded = tracks | "DecodeAndChunk" >> beam.ParDo(DecodeAndChunk(config, self._files, self._decoding)).with_outputs(
            ERRORS, FINISHED_EARLIER, LENGTHS, main="chunks"
        )
        written = (
            decoded.chunks
            | "Separate" >> SeparateChunks(self._separation)
            | "WriteStems" >> beam.ParDo(WriteStems(config, self._files, self._separation.residual))
        )
        return {"rows": written, ERRORS: decoded[ERRORS], FINISHED_EARLIER: decoded[FINISHED_EARLIER], LENGTHS: decoded[LENGTHS]}
