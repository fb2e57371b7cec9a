"""Spleeter users' files and habits replayed through stembeam's command line: its training
config and dataset CSV (Spleeter's tests/test_train.py), `separate -p CONFIG.json`, its codecs
(wma included), its evaluate flags, and filename formats that would overwrite stems."""
import json
import os

import numpy as np
import pytest

from pipeline.cli import main
from tests.conftest import AUDIO, EXAMPLE, needs_shared, read_wav

pytestmark = needs_shared
EXAMPLE_MONO = os.path.join(AUDIO, "spleeter-example", "audio_example_mono.mp3")
MUSDB_SAMPLE = os.path.join(AUDIO, "musdb18-sample", "Music Delta - 80s Rock.stem.mp4")

# Spleeter's TRAIN_CONFIG (tests/test_train.py); train_csv, model_dir, caches are set per run.
SPLEETER_TRAIN_CONFIG = {
    "mix_name": "mix",
    "instrument_list": ["vocals", "other"],
    "sample_rate": 44100,
    "frame_length": 4096,
    "frame_step": 1024,
    "T": 128,
    "F": 128,
    "n_channels": 2,
    "chunk_duration": 4,
    "n_chunks_per_song": 1,
    "separation_exponent": 2,
    "mask_extension": "zeros",
    "learning_rate": 1e-4,
    "batch_size": 2,
    "train_max_steps": 10,
    "throttle_secs": 20,
    "save_checkpoints_steps": 100,
    "save_summary_steps": 5,
    "random_seed": 0,
    "model": {"type": "unet.unet", "params": {"conv_activation": "ELU", "deconv_activation": "ELU"}},
}


def fake_training_dataset(path, n_channels, instruments=("vocals", "other"), n_songs=2, fs=44100, duration=6):
    """Spleeter's generate_fake_training_dataset: uniform noise stems of 6 s for 2 songs, and
    ``train/train.csv`` with ``mix_path``, ``<instrument>_path``, ``duration``, paths relative to ``path``."""
    import soundfile

    rng = np.random.RandomState(seed=0)
    rows = []
    for song in range(n_songs):
        folder = os.path.join(path, "train", f"song{song}")
        os.makedirs(folder, exist_ok=True)
        row = {}
        for name in list(instruments) + ["mix"]:
            soundfile.write(os.path.join(folder, f"{name}.wav"), rng.rand(duration * fs, n_channels) - 0.5, fs)
            row[f"{name}_path"] = os.path.join("train", f"song{song}", f"{name}.wav")
        rows.append({"mix_path": row.pop("mix_path"), **row, "duration": duration})
    csv_path = os.path.join(path, "train", "train.csv")
    with open(csv_path, "w") as handle:
        handle.write(",".join(rows[0]) + "\n")
        for row in rows:
            handle.write(",".join(str(v) for v in row.values()) + "\n")
    return csv_path
