"""Training examples, Spleeter's loss, and a resumable Keras training loop.

An example is one T-frame segment: the mixture's magnitudes ``mix [T, F, 2]`` (exactly the
U-nets' input at inference, model.segment_graph) and each instrument's ``[T, F, 2]``
magnitudes, as a ``tf.train.Example`` of serialized float32 tensors.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
import struct
import tempfile
from typing import Dict, Iterator, Optional

import numpy as np
import tensorflow as tf

from stembeam.model.config import ModelConfig

MIX = "mix"
# Checkpoints kept (each about three times the weights: model and Adam's two moments).
KEEP_CHECKPOINTS = 3
TRAIN, VALIDATION = "train", "validation"


def segment_magnitudes(spans: np.ndarray, config: ModelConfig) -> np.ndarray:
    """``spans [B, segment_samples, 2]`` -> ``[B, T, F, 2]`` magnitudes, as inference computes them."""
    from stembeam.model import segment_graph

    spans = tf.convert_to_tensor(spans, tf.float32)
    return segment_graph.magnitudes(segment_graph.stft(spans, config), config).numpy()


def serialize_example(mix: np.ndarray, targets: Dict[str, np.ndarray], track_id: str, offset: int) -> bytes:
    """One training example: ``mix [T, F, 2]``, ``targets {instrument: [T, F, 2]}``, its source."""

    def tensor(value):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[tf.io.serialize_tensor(tf.constant(value, tf.float32)).numpy()]))

    features = {MIX: tensor(mix), **{name: tensor(value) for name, value in targets.items()}}
    features["track_id"] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[track_id.encode("utf-8")]))
    features["offset"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(offset)]))
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def parse_example(record: tf.Tensor, config: ModelConfig):
    """``(mix [T, F, 2], targets [T, F, 2, S])`` in ``config.instruments`` order."""
    names = (MIX,) + tuple(config.instruments)
    spec = {name: tf.io.FixedLenFeature([], tf.string) for name in names}
    parsed = tf.io.parse_single_example(record, spec)
    shape = (config.T, config.F, config.n_channels)
    tensors = {name: tf.ensure_shape(tf.io.parse_tensor(parsed[name], tf.float32), shape) for name in names}
    return tensors[MIX], tf.stack([tensors[name] for name in config.instruments], axis=-1)


def matching_files(pattern: str) -> list:
    """Sorted files whose name matches the last component of ``pattern`` (fnmatch), in the folder
    its other components name literally: a folder named ``take [2]`` is that folder, not a
    pattern (tf.io.gfile.glob would read it as one)."""
    folder, name = pattern.rsplit("/", 1) if "/" in pattern else ("", pattern)
    try:
        entries = tf.io.gfile.listdir(folder or ("/" if pattern.startswith("/") else "."))
    except tf.errors.NotFoundError:
        return []
    join = (lambda entry: f"{folder}/{entry}") if "/" in pattern else (lambda entry: entry)
    return sorted(join(entry) for entry in entries if not entry.endswith("/") and fnmatch.fnmatchcase(entry, name))


def read_examples(pattern: str, config: ModelConfig) -> Iterator[dict]:
    """Every example of the files matching ``pattern`` (a pattern in the file name only, see
    matching_files) as numpy: ``{mix, <instrument>..., track_id, offset}``."""
    names = (MIX,) + tuple(config.instruments)
    for path in matching_files(pattern):
        for record in tf.data.TFRecordDataset(path):
            example = tf.train.Example.FromString(record.numpy())
            feature = example.features.feature
            out = {name: tf.io.parse_tensor(feature[name].bytes_list.value[0], tf.float32).numpy() for name in names}
            out["track_id"] = feature["track_id"].bytes_list.value[0].decode("utf-8")
            out["offset"] = int(feature["offset"].int64_list.value[0])
            yield out


def spleeter_loss(targets: tf.Tensor, outputs: tf.Tensor) -> tf.Tensor:
    """Spleeter's loss: per instrument the mean absolute difference between the masked mixture
    and the target magnitudes, summed over instruments. ``[B, T, F, 2, S]`` each."""
    # float32 reductions over millions of values drift by ~1e-3 relative on CPU: accumulate in float64.
    errors = tf.cast(tf.abs(outputs - targets), tf.float64)
    return tf.cast(tf.reduce_sum(tf.reduce_mean(errors, axis=[0, 1, 2, 3])), tf.float32)


def record_files(data: str, split: str) -> list:
    """The split's non-empty TFRecord files under ``data``."""
    return [p for p in matching_files(os.path.join(data, f"{split}-*.tfrecord")) if tf.io.gfile.stat(p).length > 0]


def make_dataset(files: list, config: ModelConfig, batch_size: int, training: bool, seed: int) -> tf.data.Dataset:
    """Batches of ``(mix, targets)`` in file order (validation); ``training``: see training_batches."""
    if training:
        return training_batches(record_index(files), config, batch_size, seed)
    return tf.data.TFRecordDataset(files).map(lambda r: parse_example(r, config)).batch(batch_size).prefetch(1)


def record_index(files: list) -> list:
    """``[(file, byte offset, length), ...]`` of every record of the TFRecord ``files``, read from
    the records' 12-byte headers (length, CRC) without reading the records."""
    index = []
    for path in files:
        with tf.io.gfile.GFile(path, "rb") as handle:
            position = 0
            while True:
                handle.seek(position)
                header = handle.read(12)
                if len(header) < 12:
                    break
                (length,) = struct.unpack("<Q", header[:8])
                index.append((path, position + 12, length))
                position += 12 + length + 4
    return index


def _shuffled_records(index: list, seed: int, start: int):
    """Serialized records in an endless series of seeded permutations of ``index``, from the
    ``start``-th example of the series on: where a run stopped is its step times the batch
    size, so nothing but the step needs to be checkpointed."""
    epoch, offset = divmod(start, len(index))
    while True:
        order = np.random.default_rng([seed, epoch]).permutation(len(index))
        for k in order[offset:]:
            path, position, length = index[k]
            with tf.io.gfile.GFile(path, "rb") as handle:
                handle.seek(position)
                yield handle.read(length)
        epoch, offset = epoch + 1, 0


def training_batches(index: list, config: ModelConfig, batch_size: int, seed: int, start_batch: int = 0) -> tf.data.Dataset:
    """Endless training batches ``(mix [B, T, F, 2], targets [B, T, F, 2, S])`` over the records of
    ``index``, shuffled over the whole set (each epoch a new seeded permutation of record
    indices), starting at batch ``start_batch``. Only indices are shuffled, so no example is
    held in a shuffle buffer, and the input's position is ``start_batch`` alone."""
    if not index:
        raise ValueError("no training records")
    records = tf.data.Dataset.from_generator(
        lambda: _shuffled_records(index, seed, start_batch * batch_size), output_signature=tf.TensorSpec([], tf.string)
    )
    return records.map(lambda r: parse_example(r, config)).batch(batch_size).prefetch(1)


@dataclasses.dataclass(frozen=True)
class TrainerSettings:
    """How a Trainer trains.

    Attributes:
        batch_size: examples per step.
        learning_rate: Adam's (Spleeter's 1e-4).
        seed: Keras' random seed (dropout, initialisation) and the records' shuffling.
        freeze_batch_norm: BatchNormalization layers frozen, in inference mode (fine-tuning).
        keep_checkpoints: the last checkpoints kept (None: all).
    """

    batch_size: int = 4
    learning_rate: float = 1e-4
    seed: int = 0
    freeze_batch_norm: bool = False
    keep_checkpoints: Optional[int] = KEEP_CHECKPOINTS


class Trainer:
    """Keras U-nets trained with Adam on Spleeter's loss; state in ``{model_dir}/checkpoints``
    (model, optimizer, step and the input pipeline's position), so a killed run resumes
    exactly where its last checkpoint was; TensorBoard summaries in ``{model_dir}/logs``.
    Runs repeat bit for bit when the process enabled ``tf.config.experimental.enable_op_determinism``
    (``stembeam train`` does)."""

    def __init__(self, config: ModelConfig, data: str, model_dir: str, settings: TrainerSettings = TrainerSettings(),
                 validation_data: Optional[str] = None):
        """Args:
            config: the model trained (its U-nets' layout, T, F).
            data: the folder of ``train-*.tfrecord`` (and ``validation-*``) records.
            model_dir: checkpoints, logs, history and the exported model go here.
            settings: batch size, learning rate, seed, frozen batch norm, checkpoints kept.
            validation_data: another folder's ``validation-*`` records (default: ``data``'s;
                none at all: the first training batches, ``validation_is_training``).

        Raises:
            FileNotFoundError: ``data`` holds no training records.
        """
        import keras

        from stembeam.model.unet import build_model

        keras.utils.set_random_seed(settings.seed)
        self.config, self.model_dir = config, model_dir
        train_files = record_files(data, TRAIN)
        if not train_files:
            raise FileNotFoundError(f"no training records {os.path.join(data, TRAIN + '-*.tfrecord')} (run `stembeam prepare-dataset`)")
        validation_files = record_files(validation_data or data, VALIDATION)
        # Without validation records the "validation" loss is the first training batches' (in
        # inference mode): said so by the command.
        self.validation_is_training = not validation_files
        self.validation_files = validation_files or train_files
        self.model = build_model(config)
        if settings.freeze_batch_norm:
            # Keras' fine-tuning practice: frozen BatchNormalization layers run in inference mode,
            # so small fine-tuning batches do not overwrite the pretrained statistics.
            for layer in self.model.layers:
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.trainable = False
        self.optimizer = keras.optimizers.Adam(settings.learning_rate)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self._train_index = record_index(train_files)
        self._seed = settings.seed
        self._batches = None  # made once the step is known (restored or 0)
        self._batch_size = settings.batch_size
        # Dropout's random state is not among the model's variables: checkpoint it too, so a
        # resumed run draws the same masks as an uninterrupted one.
        rng = {layer.name: layer.seed_generator.state for layer in self.model.layers if getattr(layer, "seed_generator", None) is not None}
        # The input's position is the step (training_batches), so no example is checkpointed.
        self._checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer, step=self.step, rng=rng)
        self._checkpoints = os.path.join(model_dir, "checkpoints")
        self._manager = tf.train.CheckpointManager(self._checkpoint, self._plain_checkpoints(), max_to_keep=settings.keep_checkpoints)
        self._writer = tf.summary.create_file_writer(os.path.join(model_dir, "logs"))
        self._train_step = tf.function(self._train_step_graph)

    def _plain_checkpoints(self) -> str:
        """The checkpoints folder; for a local one whose path holds glob characters (``--model-dir
        "m [2]"``), a plain-named link to it: TF reads checkpoints and drops old ones through
        globs of their prefixes, which found nothing there (no resume, no checkpoint dropped)."""
        if "://" in self._checkpoints or not any(char in self._checkpoints for char in "*?["):
            return self._checkpoints
        os.makedirs(self._checkpoints, exist_ok=True)
        self._link = tempfile.TemporaryDirectory(prefix="stembeam-checkpoints-")  # removed with the trainer
        link = os.path.join(self._link.name, "checkpoints")
        os.symlink(os.path.abspath(self._checkpoints), link)
        return link

    def restore_or_initialize(self, init: Optional[str] = None) -> str:
        """Resume from the latest checkpoint; else start from ``init`` (a model name or folder,
        e.g. the official weights) or from Spleeter's initialisation."""
        if self._manager.latest_checkpoint:
            self._checkpoint.restore(self._manager.latest_checkpoint).assert_existing_objects_matched()
            latest = os.path.join(self._checkpoints, os.path.basename(self._manager.latest_checkpoint))
            return f"resumed at step {int(self.step.numpy())} from {latest}"
        if init:
            from stembeam.model.load import load_model

            init_config, init_model = load_model(init, init if os.path.isdir(init) else None)
            if init_config.instruments != self.config.instruments:
                raise ValueError(f"--init {init}: instruments {init_config.instruments} differ from {self.config.instruments}")
            # By name: freezing layers reorders model.weights (trainable ones first).
            source = {weight.path: weight for weight in init_model.weights}
            for weight in self.model.weights:
                weight.assign(source[weight.path])
            return f"initialised from {init}"
        return "initialised from scratch"

    def _train_step_graph(self, mix, targets):
        with tf.GradientTape() as tape:
            loss = spleeter_loss(targets, self.model(mix, training=True))
        variables = self.model.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    def validation_loss(self, batches: int) -> float:
        """Mean loss over the first ``batches`` validation batches (fixed order, inference mode)."""
        losses = [
            float(spleeter_loss(targets, self.model(mix, training=False)))
            for mix, targets in make_dataset(self.validation_files, self.config, self._batch_size, False, 0).take(batches)
        ]
        return float(np.mean(losses))

    def _log(self, entry: dict) -> None:
        with self._writer.as_default():
            for key, value in entry.items():
                if key != "step" and value is not None:
                    tf.summary.scalar(key, value, step=entry["step"])
        self._writer.flush()
        with tf.io.gfile.GFile(os.path.join(self.model_dir, "history.jsonl"), "a") as handle:
            handle.write(json.dumps(entry) + "\n")

    def train(self, steps: int, checkpoint_every: int = 100, validation_batches: int = 4, on_checkpoint=None) -> list:
        """Train until ``steps`` (a total, counting resumed steps); validate and checkpoint at
        the start and every ``checkpoint_every`` steps. Returns this run's history entries."""
        history = []
        if int(self.step.numpy()) == 0 and not self._manager.latest_checkpoint:
            history.append({"step": 0, "train_loss": None, "validation_loss": self.validation_loss(validation_batches)})
            self._log(history[-1])
            if on_checkpoint is not None:
                on_checkpoint(history[-1])
        running = []
        if self._batches is None:
            self._batches = iter(training_batches(self._train_index, self.config, self._batch_size, self._seed, int(self.step.numpy())))
        while int(self.step.numpy()) < steps:
            mix, targets = next(self._batches)
            running.append(float(self._train_step(mix, targets)))
            self.step.assign_add(1)
            step = int(self.step.numpy())
            if step % checkpoint_every == 0 or step == steps:
                entry = {"step": step, "train_loss": float(np.mean(running)), "validation_loss": self.validation_loss(validation_batches)}
                running = []
                self._manager.save(checkpoint_number=step)
                history.append(entry)
                self._log(entry)
                if on_checkpoint is not None:
                    on_checkpoint(entry)
        return history

    def export(self, directory: Optional[str] = None) -> str:
        """``model.keras``, ``saved_model/``, ``stembeam.json`` and a name-based checkpoint with
        the official variable names (``model.index`` / ``model.data-*``) in ``directory``
        (default: the model folder), so ``stembeam separate -p`` and the pipeline load it."""
        from stembeam.model.checkpoint import save_official_checkpoint
        from stembeam.model.export import export_model

        directory = directory or self.model_dir
        export_model(self.model, self.config, directory)
        save_official_checkpoint(self.model, os.path.join(directory, "model"), int(self.step.numpy()))
        return directory
