"""Arithmetic precision of the separation: ``float32`` (exact, the default), ``bfloat16``, or
``auto`` (bfloat16 where it is the fast path: a CPU with AMX, a GPU; float32 elsewhere, silently).

bfloat16 runs the U-nets in reduced precision; the STFT, the masks and the inverse STFT stay
float32 (model.synthesis: its exact order costs nothing measurable, the inverse FFT does):
  - on a GPU: Keras mixed precision (``mixed_bfloat16``; ``mixed_float16`` on GPUs older than
    compute capability 8.0, e.g. a T4, which have no bfloat16 arithmetic);
  - on a CPU with AVX512_BF16 or AMX: the U-nets' bfloat16 transcription
    (model.unet.reduced_precision_unets: oneDNN's bfloat16 kernels; with AVX512_BF16 but no
    AMX, one line says it is likely slower than float32: oneDNN's bfloat16 convolutions
    measured 1.3-1.6x slower than float32 on such CPUs, Zen 4 and Xeon);
  - on a CPU without them: one line on stderr, then float32 (bfloat16 would only be emulated,
    slower than float32).
"""
from __future__ import annotations

import functools
import os
import sys

PRECISIONS = ("float32", "bfloat16", "auto")
# /proc/cpuinfo flags of CPUs with native bfloat16 dot products (AVX512_BF16, AMX).
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: str | None = None) -> set:
    """The CPU feature flags Linux reports.

    Args:
        cpuinfo: the file to read (None: ``$STEMBEAM_CPUINFO``, for tests of other CPUs, else
            /proc/cpuinfo).
    Returns:
        A set of flags (``amx_bf16``...); empty where there is no such file.
    """
    cpuinfo = cpuinfo or os.environ.get("STEMBEAM_CPUINFO", "/proc/cpuinfo")
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@functools.lru_cache(maxsize=None)
def gpu_compute_capability():
    """``(major, minor)`` of the first visible GPU, or None without one (cached)."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    details = tf.config.experimental.get_device_details(gpus[0])
    return tuple(details.get("compute_capability") or (0, 0))


def check_precision(precision: str) -> str:
    """``precision`` when it is one of PRECISIONS; ValueError naming ``--precision`` otherwise."""
    if precision not in PRECISIONS:
        raise ValueError(f"--precision {precision!r}: choose float32, bfloat16 or auto")
    return precision


_WARNED = set()


def effective_precision(precision: str, cpuinfo: str | None = None, gpu=None) -> str:
    """What ``precision`` runs as on this machine.

    A bfloat16 request on a CPU without bfloat16 instructions prints one line (once per
    process) and runs in float32; on a CPU with AVX512_BF16 but no AMX one line says bfloat16 is
    likely the slower choice. ``auto`` is bfloat16 on a GPU or a CPU with AMX, float32
    elsewhere, without a line.

    Args:
        precision: ``float32``, ``bfloat16`` or ``auto``.
        cpuinfo: the cpuinfo file (see cpu_flags).
        gpu: the GPU's compute capability (None: ask TensorFlow).
    Returns:
        ``float32``, ``bfloat16`` (oneDNN on the CPU), ``mixed_bfloat16`` or ``mixed_float16``
        (Keras on a GPU).
    Raises:
        ValueError: an unknown precision.
    """
    if check_precision(precision) == "float32":
        return "float32"
    capability = gpu_compute_capability() if gpu is None else gpu
    if capability:
        return "mixed_bfloat16" if capability >= (8, 0) else "mixed_float16"
    flags = cpu_flags(cpuinfo)
    if precision == "auto":
        return "bfloat16" if "amx_bf16" in flags else "float32"
    if flags & set(BF16_CPU_FLAGS):
        if "amx_bf16" not in flags:
            _say_once(f"{cpuinfo}:no-amx", "stembeam: --precision bfloat16: this CPU has avx512_bf16 but no AMX (amx_bf16); bfloat16 U-nets "
                      "are usually slower than float32 on such CPUs (keep float32 for speed); running in bfloat16 as asked")
        return "bfloat16"
    _say_once(f"{cpuinfo}", "stembeam: --precision bfloat16: this CPU has no bfloat16 instructions (avx512_bf16 or amx_bf16); running in float32")
    return "float32"


def faster_precision_hint(cpuinfo: str | None = None) -> str | None:
    """The line the command line shows a person at a terminal running the float32 default on a CPU
    with AMX, where bfloat16 is the fast path; None elsewhere (``cpuinfo``: see cpu_flags).
    """
    if "amx_bf16" not in cpu_flags(cpuinfo):
        return None
    return ("stembeam: hint: this CPU has AMX (amx_bf16): --precision bfloat16 (or auto) separates about 1.7x as fast, "
            "SDR within 0.05 dB of float32; the default, float32, gives exact stems")


def _say_once(key: str, line: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        print(line, file=sys.stderr, flush=True)


def mixed_precision_model(model, config, policy: str):
    """A copy of the U-net ``model`` built under a Keras mixed-precision policy, same weights.

    Args:
        model: the Keras U-nets.
        config: its ModelConfig.
        policy: ``mixed_bfloat16`` or ``mixed_float16`` (variables float32, computation in the
            reduced type).
    Returns:
        keras.Model, the same inputs and outputs as ``model``.
    """
    import keras

    from stembeam.model.unet import build_model

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        mixed = build_model(config)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    mixed.set_weights(model.get_weights())
    return mixed
