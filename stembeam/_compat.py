"""Other libraries' private APIs, each called from here alone.

Each function names the library version it was checked against. ``tests/test_compat.py`` calls
every one of them against the installed libraries, so a release that renames or removes one of
these fails there, loudly, instead of somewhere in a job. Libraries are imported inside the
functions: importing this module imports none of them.
"""
from __future__ import annotations

# libsndfile's sf_command code: whether a float WAV gets a PEAK chunk (sndfile.h).
_SFC_SET_ADD_PEAK_CHUNK = 0x1050


def soundfile_without_peak_chunk(sound) -> None:
    """No PEAK chunk in the float WAV ``sound`` (a soundfile.SoundFile open for writing, before
    any sample): libsndfile stamps that chunk with the time of writing, so the same samples made
    different files. soundfile has no public call for it: its own handle and cffi module are
    used. Checked against soundfile 0.14.0 (libsndfile 1.2.2)."""
    import soundfile

    soundfile._snd.sf_command(sound._file, _SFC_SET_ADD_PEAK_CHUNK, soundfile._ffi.NULL, 0)  # noqa: SLF001


def tf_op_determinism_enabled() -> bool:
    """Whether TensorFlow's op determinism is on (tf.config has the setter only). Checked
    against tensorflow 2.17.1 (tensorflow.python.framework.config)."""
    from tensorflow.python.framework import config

    return config.is_op_determinism_enabled()


def tf_disable_op_determinism() -> None:
    """Turn TensorFlow's op determinism off again. Checked against tensorflow 2.17.1."""
    from tensorflow.python.framework import config

    config.disable_op_determinism()


def beam_argument_parser():
    """Beam's own argparse parser class for pipeline options (it accepts what PipelineOptions
    accepts, e.g. ValueProvider arguments). Checked against apache-beam 2.72.0
    (apache_beam.options.pipeline_options._BeamArgumentParser)."""
    from apache_beam.options.pipeline_options import _BeamArgumentParser

    return _BeamArgumentParser(allow_abbrev=False)


def beam_add_options(options_class, parser) -> None:
    """Add a PipelineOptions subclass's flags to ``parser``, as PipelineOptions itself does.
    Checked against apache-beam 2.72.0 (PipelineOptions._add_argparse_args)."""
    options_class._add_argparse_args(parser)  # noqa: SLF001


def beam_gcsio(uri: str):
    """The GcsIO behind Beam's filesystem for the gs:// ``uri``: exact-name calls (get one
    object, delete one, list by a literal prefix) that FileSystems only offers through glob
    patterns. Checked against apache-beam 2.72.0 (GCSFileSystem._gcsIO)."""
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.get_filesystem(uri)._gcsIO()  # noqa: SLF001


def beam_list_prefix(prefix: str) -> list:
    """FileMetadata of every object whose name starts with the literal ``prefix`` (one listing,
    no glob). Checked against apache-beam 2.72.0 (FileSystem._list)."""
    from apache_beam.io.filesystems import FileSystems

    return list(FileSystems.get_filesystem(prefix)._list(prefix))  # noqa: SLF001


def run_exit_handlers() -> None:
    """Run the interpreter's atexit handlers now (what a normal exit runs first), before an
    ``os._exit``. Checked against CPython 3.10-3.12 (atexit._run_exitfuncs)."""
    import atexit

    atexit._run_exitfuncs()  # noqa: SLF001


# Keras 3's private modules that import optional packages stembeam never uses (scikit-learn for
# its wrappers, matplotlib for two plotting utilities, Pillow for image files). Checked against
# keras 3.15.1 (keras/src/wrappers, keras/src/visualization, keras/src/utils).
KERAS_OPTIONAL_IMPORTERS = {
    "sklearn": ("keras.src.wrappers.fixes", "keras.src.wrappers.sklearn_wrapper"),
    "matplotlib": ("keras.src.visualization.plot_image_gallery", "keras.src.visualization.plot_bounding_box_gallery"),
    "PIL": ("keras.src.utils.image_utils", "keras.src.utils.image_dataset_utils"),
}


def argparse_options(parser) -> list:
    """``(option strings, dest)`` of every option an argparse parser knows, in order (argparse
    has no public list of them). Checked against CPython 3.10-3.12 (ArgumentParser._actions)."""
    return [(tuple(action.option_strings), action.dest) for action in parser._actions if action.option_strings]  # noqa: SLF001


def argparse_option_strings(parser) -> list:
    """Every option string an argparse parser knows."""
    return [option for strings, _ in argparse_options(parser) for option in strings]
