"""stembeam: music source separation with Spleeter's U-nets, as a library and as Apache Beam jobs.

    import stembeam
    separator = stembeam.Separator("spleeter:2stems")
    stems = separator.separate(stembeam.load_audio("song.flac"))  # {"vocals": [n, 2], "accompaniment": [n, 2]}
    table = stembeam.read_output("out/")          # a finished `stembeam pipeline` output, a row per track and stem

Subpackages: ``stembeam.model`` (TensorFlow/Keras models, no Beam), ``stembeam.transforms``
(Beam PTransforms and DoFns), ``stembeam.pipeline`` (the jobs and the command line) and
``stembeam.launch`` (runner-specific launching). ``import stembeam`` loads none of them until
an attribute is used, and no call of the library changes the process beyond stembeam.

Shapes, as the docstrings write them:

- ``[samples, channels]``: a waveform, float32, full scale 1.0 (``[n, 2]``: stereo; the models
  take stereo at 44.1 kHz).
- ``[L, 2]``: one segment's samples, ``L = (T - 1) * hop + N`` (model/separation.py).
- ``[frames, bins, channels]``: an STFT (complex64, ``bins = N // 2 + 1`` = 2049) or its
  magnitudes; the U-nets see the first ``F`` bins (1024, or 1536 for the 16 kHz models).
- ``[B, T, F, channels]``: a batch of ``B`` segments of ``T`` frames (512) into the U-nets;
  ``[..., S]``: one more axis for the ``S`` sources (stems) of a model.
- ``N`` = 4096 (frame length), ``hop`` = 1024 (frame step), ``T`` = 512 frames per segment.
- Features (model/features/) analyse the mono mix at 22.05 kHz: ``[k]`` samples,
  ``[frames, 1025]`` power or magnitude spectra (``N_FFT`` = 2048, ``HOP`` = 512, FRAME_S =
  23.2 ms), ``[N_MELS, frames]`` mel spectra (128), ``[frames]`` per-frame series.
"""
__version__ = "0.1.0"

__all__ = ["Separator", "load_audio", "read_output", "read_tables", "OutputTables", "__version__"]

_LAZY = {
    "Separator": ("stembeam.model.separator", "Separator"),
    "load_audio": ("stembeam.model.decode", "load_audio"),
    "read_output": ("stembeam.pipeline.outputs", "read_output"),
    "read_tables": ("stembeam.pipeline.outputs", "read_tables"),
    "OutputTables": ("stembeam.pipeline.outputs", "OutputTables"),
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        from stembeam._quiet import quiet

        module, attribute = _LAZY[name]
        with quiet():  # what the dependencies print while they load is not the user's business
            value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'stembeam' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
