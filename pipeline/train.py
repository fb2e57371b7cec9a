"""``stembeam train``: Keras training on prepared TFRecords, resumable, exported for separation."""
from __future__ import annotations

import argparse
import json
import os
import sys

from pipeline.flags import add_console_args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stembeam train",
        description="Train or fine-tune a Spleeter U-net model on `stembeam prepare-dataset` records. "
        "Run again with the same --model-dir to resume after an interruption.",
    )
    parser.add_argument("--config", default="spleeter:2stems", help="spleeter:2stems|4stems|5stems or a CONFIG.json (must match the records)")
    parser.add_argument("--data", required=True, help="folder of train-*.tfrecord (and validation-*.tfrecord), local or gs://")
    parser.add_argument("--model-dir", required=True, help="checkpoints/, logs/ (TensorBoard), history.jsonl and the exported model")
    parser.add_argument("--init", default=None, help="start from these weights: spleeter:2stems or a model folder (fine-tuning)")
    parser.add_argument("--steps", type=int, default=1000, help="total training steps (resumed steps count)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=1e-4, help="Adam's learning rate (Spleeter: 1e-4)")
    parser.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints and validation")
    parser.add_argument("--validation-batches", type=int, default=4)
    parser.add_argument("--keep-checkpoints", type=int, default=3, help="checkpoints kept (the latest ones; 0: all)")
    parser.add_argument("--seed", type=int, default=0)
    add_console_args(parser)
    parser.add_argument(
        "--batch-norm", choices=("auto", "train", "freeze"), default="auto",
        help="auto: frozen (inference mode, pretrained statistics kept) when fine-tuning with --init, trained from scratch",
    )
    return parser


def _check_records(data: str, config) -> None:
    """The records' config.json (written by prepare-dataset) must describe the same examples."""
    import tensorflow as tf

    from model.config import ModelConfig

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
    if args.steps < 0 or args.batch_size < 1 or args.checkpoint_every < 1:
        raise SystemExit("--steps must be >= 0, --batch-size and --checkpoint-every >= 1")
    import tensorflow as tf

    from model.training import Trainer
    from pipeline.prepare import model_config

    # Same seed, same data -> the same weights, and a resumed run continues bit for bit.
    tf.config.experimental.enable_op_determinism()

    config = model_config(args.config)
    _check_records(args.data, config)
    freeze = args.batch_norm == "freeze" or (args.batch_norm == "auto" and args.init is not None)
    trainer = Trainer(
        config, args.data, args.model_dir, args.batch_size, args.learning_rate, args.seed, freeze_batch_norm=freeze, keep_checkpoints=args.keep_checkpoints or None,
    )
    print(f"stembeam train: {trainer.restore_or_initialize(args.init)}", file=sys.stderr, flush=True)

    def report(entry):
        print(json.dumps(entry), flush=True)

    trainer.train(args.steps, args.checkpoint_every, args.validation_batches, on_checkpoint=report)
    trainer.export()
    print(f"stembeam train: step {int(trainer.step.numpy())}; model exported to {args.model_dir} (stembeam separate -p {args.model_dir})", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
