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

from stembeam.model.config import ModelConfig
from stembeam.transforms.audio import DECODED, DONE, ERRORS, DecodeAndChunk, Decoding
from stembeam.transforms.inference import SeparateChunks
from stembeam.transforms.write import WriteStems


class SeparateTracks(beam.PTransform):
    """Track -> ``{"rows": metadata rows of written tracks (and error rows of tracks whose
    stems could not be written), "errors": (track_id, uri, reason) of undecodable tracks,
    "done": stored rows (JSON) of finished tracks, "decoded": (track_id, seconds)}``.

    ``key``: the job's resume key (transforms.resume); ``accelerator``: a resource hint for the
    whole chain (decoding included), so it all runs in the accelerator's environment and only
    those small outputs leave it (runners do not fuse across environments).
    """

    def __init__(self, config: ModelConfig, output: str, key: dict, keras_uri: str, *, skip_existing: bool = True, batch_size: int = 2,
                 mwf: bool = False, mwf_block_frames: int = 512, precision: str = "float32", bitrate: str = "128k", version: str = "",
                 run_id: str | None = None, bit_depth: int | None = None, residual: bool = False, decoding: Decoding = Decoding()):
        super().__init__()
        self._decoding = decoding
        self._bit_depth, self._residual = bit_depth, residual
        self._config, self._output, self._key, self._keras_uri = config, output, key, keras_uri
        self._skip_existing, self._batch_size, self._mwf, self._block = skip_existing, batch_size, mwf, mwf_block_frames
        self._precision, self._bitrate, self._version, self._run_id = precision, bitrate, version, run_id

    def expand(self, tracks):
        decoded = tracks | "DecodeAndChunk" >> beam.ParDo(
            DecodeAndChunk(self._config, self._output, self._key, self._skip_existing, self._run_id, self._decoding)
        ).with_outputs(ERRORS, DONE, DECODED, main="chunks")
        written = (
            decoded.chunks
            | "Separate" >> SeparateChunks(self._config, self._keras_uri, self._batch_size, self._mwf, self._block, self._precision,
                                           self._residual)
            | "WriteStems" >> beam.ParDo(WriteStems(self._config, self._output, self._key, self._bitrate, self._version, self._run_id,
                                                    self._bit_depth, self._residual))
        )
        return {"rows": written, ERRORS: decoded[ERRORS], DONE: decoded[DONE], DECODED: decoded[DECODED]}

