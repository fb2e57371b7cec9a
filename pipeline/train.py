"""``stembeam train``: Keras training on prepared TFRecords, resumable, exported for separation."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys

from stembeam.model.config import SpleeterTraining
from stembeam.pipeline.flags import add_console_args


def build_parser() -> argparse.ArgumentParser:
    from stembeam.pipeline.spelling import Parser  # both spellings of every option, "did you mean"

    parser = Parser(
        prog="stembeam train",
        description="Train or fine-tune a Spleeter U-net model on `stembeam prepare-dataset` records. "
        "Run again with the same --model-dir to resume after an interruption. "
        "Spleeter's command line works too: `stembeam train -p CONFIG.json -d DATASET_DIR` builds the records of the "
        "config's train_csv / validation_csv (paths relative to DATASET_DIR) and trains with the config's settings.",
    )
    parser.add_argument(
        "--config", "-p", "--params_filename", default="spleeter:2stems",
        help="spleeter:2stems|4stems|5stems (-16kHz: to 16 kHz) or a CONFIG.json: stembeam's (must match the records) or Spleeter's",
    )
    parser.add_argument(
        "--data", "-d", required=True,
        help="folder of train-*.tfrecord (and validation-*.tfrecord), local or gs://; with a Spleeter config naming "
        "train_csv: the audio folder its CSV paths start from",
    )
    parser.add_argument("--model-dir", default=None, help="checkpoints/, logs/ (TensorBoard), history.jsonl and the exported model (default: a Spleeter config's model_dir)")
    parser.add_argument("--init", default=None, help="start from these weights: spleeter:2stems or a model folder (fine-tuning)")
    parser.add_argument("--steps", type=int, default=None, help="total training steps (resumed steps count; default 1000 or a Spleeter config's train_max_steps)")
    parser.add_argument("--batch-size", type=int, default=None, help="default 4 or a Spleeter config's batch_size")
    parser.add_argument("--learning-rate", type=float, default=None, help="Adam's learning rate (default Spleeter's 1e-4 or the config's learning_rate)")
    parser.add_argument("--checkpoint-every", type=int, default=None, help="steps between checkpoints and validation (default 100 or save_checkpoints_steps)")
    parser.add_argument("--validation-batches", type=int, default=4,
                        help="batches the validation loss is computed on at each checkpoint (default 4)")
    parser.add_argument("--keep-checkpoints", type=int, default=3, help="checkpoints kept (the latest ones; 0: all)")
    parser.add_argument("--seed", type=int, default=None, help="default 0 or a Spleeter config's random_seed")
    add_console_args(parser)
    parser.add_argument(
        "--batch-norm", choices=("auto", "train", "freeze"), default="auto",
        help="auto: frozen (inference mode, pretrained statistics kept) when fine-tuning with --init, trained from scratch",
    )
    # Spleeter's own train flags, accepted so its command lines run unchanged (its --verbose is
    # add_console_args').
    parser.add_argument("-a", "--adapter", default=None, help=argparse.SUPPRESS)
    return parser


def _settings(args, training):
    """Command-line values win; then the Spleeter config's; then stembeam's defaults."""
    spleeter = training or SpleeterTraining()
    pick = lambda given, configured, default: given if given is not None else (configured if training else default)  # noqa: E731
    return {
        "steps": pick(args.steps, spleeter.train_max_steps, 1000),
        "batch_size": pick(args.batch_size, spleeter.batch_size, 4),
        "learning_rate": pick(args.learning_rate, spleeter.learning_rate, 1e-4),
        "checkpoint_every": pick(args.checkpoint_every, spleeter.save_checkpoints_steps, 100),
        "seed": pick(args.seed, spleeter.random_seed, 0),
        "model_dir": args.model_dir or spleeter.model_dir,
    }


def _spleeter_records(config, training, root: str, model_dir: str, seed: int):
    """``(train records folder, validation records folder)`` built from the Spleeter config's
    CSVs (at ``training_cache`` / ``validation_cache``, default ``{model_dir}/records/``)."""
    from stembeam.pipeline.prepare import DatasetSource, prepare_split
    from stembeam.model.training import TRAIN, VALIDATION

    train_cache = training.training_cache or os.path.join(model_dir, "records", TRAIN)
    validation_cache = training.validation_cache or os.path.join(model_dir, "records", VALIDATION)
    if os.path.normpath(train_cache) == os.path.normpath(validation_cache):
        train_cache, validation_cache = os.path.join(train_cache, TRAIN), os.path.join(validation_cache, VALIDATION)
    folders = {}
    for split, csv_uri, cache in ((TRAIN, training.train_csv, train_cache), (VALIDATION, training.validation_csv, validation_cache)):
        if not csv_uri:
            continue
        stats = prepare_split(DatasetSource(csv_uri, root=root, split=split, mix_name=training.mix_name), cache, config, seed)
        print(f"stembeam train: {split} records from {csv_uri}: {stats[split]['tracks']} tracks, {stats[split]['examples']} examples in {cache}", file=sys.stderr, flush=True)
        for failed in stats["failed"]:
            print(f"error: {failed['reason']}", file=sys.stderr, flush=True)
        if stats[split]["examples"] == 0:
            raise SystemExit(f"stembeam train: no usable track in {csv_uri} (paths relative to {root})")
        folders[split] = cache
    return folders[TRAIN], folders.get(VALIDATION)


def _check_records(data: str, config) -> None:
    """The records' config.json (written by prepare-dataset) must describe the same examples."""
    import tensorflow as tf

    from stembeam.model.config import ModelConfig

    path = os.path.join(data, "config.json")
    if not tf.io.gfile.exists(path):
        return
    with tf.io.gfile.GFile(path) as handle:
        prepared = ModelConfig.from_json(handle.read())
    keys = ("instruments", "T", "F", "frame_length", "frame_step", "sample_rate")
    different = [k for k in keys if getattr(prepared, k) != getattr(config, k)]
    if different:
        raise SystemExit(f"--config {config.name} does not match the records in {data} ({prepared.name}): {', '.join(different)} differ")


def run(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from stembeam.model.config import load_config_file

    config = training = None
    if args.config.lower().endswith(".json"):
        try:
            config, training = load_config_file(args.config)
        except (ValueError, OSError) as error:
            raise SystemExit(f"stembeam train: --config {error}") from None
    settings = _settings(args, training)
    if settings["steps"] < 0 or settings["batch_size"] < 1 or settings["checkpoint_every"] < 1:
        raise SystemExit("--steps must be >= 0, --batch-size and --checkpoint-every >= 1")
    if not settings["model_dir"]:
        raise SystemExit("stembeam train: --model-dir required (or a Spleeter config naming model_dir)")
    if training is not None and training.ignored:
        print(f"stembeam train: {args.config}: ignored keys {', '.join(training.ignored)}", file=sys.stderr, flush=True)
    with _op_determinism():
        return _train(args, settings, training, config)


@contextlib.contextmanager
def _op_determinism():
    """Same seed, same data -> the same weights, and a resumed run continues bit for bit. Only
    for the run: left on, it would break unseeded random ops of whatever the process runs next
    (``train`` called in-process, e.g. Spleeter's graph with its dropout)."""
    import tensorflow as tf

    from stembeam._compat import tf_disable_op_determinism, tf_op_determinism_enabled

    was_on = tf_op_determinism_enabled()
    tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        if not was_on:
            tf_disable_op_determinism()


def _train(args, settings: dict, training, config) -> int:
    """The training run: ``config`` and ``training`` come from a Spleeter config JSON, else
    (None) the model configuration is ``--config``'s."""
    from stembeam.model.training import Trainer, TrainerSettings
    from stembeam.pipeline.prepare import model_config

    model_dir = settings["model_dir"]
    if training is None:
        config = model_config(args.config)
    spleeter_layout = training is not None and bool(training.train_csv)
    if spleeter_layout:
        data, validation_data = _spleeter_records(config, training, args.data, model_dir, settings["seed"])
    else:
        data, validation_data = args.data, None
        _check_records(data, config)
    freeze = args.batch_norm == "freeze" or (args.batch_norm == "auto" and args.init is not None)
    trainer = Trainer(config, data, model_dir, TrainerSettings(
        settings["batch_size"], settings["learning_rate"], settings["seed"], freeze, args.keep_checkpoints or None,
    ), validation_data)
    print(f"stembeam train: {trainer.restore_or_initialize(args.init)}", file=sys.stderr, flush=True)
    if trainer.validation_is_training:
        print(f"stembeam train: no validation records in {validation_data or args.data}: the validation loss is the loss of the first "
              f"{args.validation_batches} training batches (in inference mode), not of held-out tracks", file=sys.stderr, flush=True)

    def report(entry):
        print(json.dumps(entry), flush=True)

    trainer.train(settings["steps"], settings["checkpoint_every"], args.validation_batches, on_checkpoint=report)
    trainer.export()
    step = int(trainer.step.numpy())
    if spleeter_layout:
        from stembeam.model.checkpoint import save_official_checkpoint

        # Spleeter's Estimator layout: model.ckpt-<step>.index/.data-* and `checkpoint` naming it.
        save_official_checkpoint(trainer.model, os.path.join(model_dir, f"model.ckpt-{step}"), step)
    model = args.config if spleeter_layout else model_dir
    # Its own output folder: separate's default (separated_audio) may hold the official model's stems.
    shown_output = "separated_" + os.path.basename(os.path.normpath(model_dir)).replace(" ", "_")
    shown = model if os.sep in model or model.startswith(".") or spleeter_layout else os.path.join(".", model)
    print(f"stembeam train: step {step}; model exported to {model_dir} (use it with: stembeam separate -p {shown} -o {shown_output} FILE...)", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
