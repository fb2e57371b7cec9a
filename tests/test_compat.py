"""Every private API of another library that stembeam calls (stembeam/_compat.py, its only caller)
still does what stembeam relies on with the installed versions; a library release that changes
one fails here, naming it."""
import argparse
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from stembeam import _compat
from tests.conftest import REPO

pytestmark = pytest.mark.fast


def test_soundfile_writes_float_wav_without_a_peak_chunk(tmp_path):
    soundfile = pytest.importorskip("soundfile")
    paths = []
    for name in ("a.wav", "b.wav"):
        path = str(tmp_path / name)
        with soundfile.SoundFile(path, "w", 44100, 2, "FLOAT", format="WAV") as sound:
            _compat.soundfile_without_peak_chunk(sound)
            sound.write(np.full((100, 2), 0.5, np.float32))
        paths.append(path)
    data = [open(path, "rb").read() for path in paths]
    assert b"PEAK" not in data[0] and data[0] == data[1]


def test_tensorflow_op_determinism_switches():
    import tensorflow as tf

    was = _compat.tf_op_determinism_enabled()
    tf.config.experimental.enable_op_determinism()
    assert _compat.tf_op_determinism_enabled() is True
    _compat.tf_disable_op_determinism()
    assert _compat.tf_op_determinism_enabled() is False
    if was:
        tf.config.experimental.enable_op_determinism()


def test_beams_argument_parser_and_option_definitions():
    from apache_beam.options.pipeline_options import StandardOptions

    parser = _compat.beam_argument_parser()
    assert isinstance(parser, argparse.ArgumentParser)
    _compat.beam_add_options(StandardOptions, parser)
    assert "--runner" in _compat.argparse_option_strings(parser)
    assert _compat.argparse_options(parser)[:3] == [(("-h", "--help"), "help"), (("--runner",), "runner"), (("--streaming",), "streaming")]
    positional = argparse.ArgumentParser()
    positional.add_argument("files")
    assert _compat.argparse_options(positional) == [(("-h", "--help"), "help")]  # options only, in the order added
    assert parser.parse_known_args(["--runner", "DirectRunner", "--other"])[0].runner == "DirectRunner"


def test_beams_literal_listing_and_gcs_client(tmp_path):
    for name in ("a[1].txt", "a*.txt", "b.txt"):
        (tmp_path / name).write_text("x")
    listed = sorted(os.path.basename(meta.path) for meta in _compat.beam_list_prefix(str(tmp_path)))
    assert listed == ["a*.txt", "a[1].txt", "b.txt"]  # names with glob characters listed as they are
    from apache_beam.io.gcp.gcsfilesystem import GCSFileSystem

    assert callable(getattr(GCSFileSystem, "_gcsIO", None)), "apache_beam's GCSFileSystem._gcsIO is gone"


def test_atexit_handlers_run_when_asked():
    code = ("import atexit, os\nfrom stembeam import _compat\natexit.register(lambda: print('handler ran', flush=True))\n"
            "_compat.run_exit_handlers()\nos._exit(0)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout == "handler ran\n"


@pytest.mark.parametrize("package", sorted(_compat.KERAS_OPTIONAL_IMPORTERS))
def test_kerass_optional_importers_exist(package):
    for module in _compat.KERAS_OPTIONAL_IMPORTERS[package]:
        assert importlib.util.find_spec(module) is not None, f"keras has no {module} any more"
