"""Where a job's wall time goes: Beam distributions of milliseconds per stage (namespace
``stembeam``), summed by the benchmark's breakdown (tests/benchmarks/throughput.py)."""
from __future__ import annotations

import contextlib
import time

# metric name -> what it times
STAGES = {
    "decode_ms": "decode (and resample) each track to a local raw file, cut into segments",
    "stft_ms": "STFT of each batch of segments (TF)",
    "unets_ms": "U-nets (TF)",
    "masks_istft_ms": "ratio masks, inverse STFT and the segment's own overlap-add (TF)",
    "wiener_ms": "multichannel Wiener filter (--mwf)",
    "overlap_add_ms": "overlap-adding consecutive segments (numpy)",
    "encode_ms": "encoding and writing the stems, the marker",
}


@contextlib.contextmanager
def timer(distribution):
    """A context manager adding the block's wall time in ms to a Beam metric.

    Args:
        distribution: a ``Metrics.distribution``.
    """
    start = time.perf_counter()
    try:
        yield
    finally:
        distribution.update(int(round(1000 * (time.perf_counter() - start))))
