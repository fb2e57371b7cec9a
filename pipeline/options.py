"""StembeamOptions: the corpus job's options, next to every Beam option."""
from apache_beam.options.pipeline_options import PipelineOptions


class StembeamOptions(PipelineOptions):
    """--manifest and --output are checked by the job, not argparse: every PipelineOptions parses
    all registered subclasses, so a required flag here would break unrelated pipelines."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--manifest", default=None, help="CSV / JSONL / Parquet manifest (local or gs://)")
        parser.add_argument("--output", default=None, help="output root: stems/, metadata/ (local or gs://)")
        parser.add_argument("--model", default="spleeter:2stems", help="model name or folder")
        parser.add_argument("--model_dir", "--model-dir", default=None, help="folder holding the model")
        parser.add_argument("--mwf", action="store_true", default=False, help="multichannel Wiener filter (norbert)")
        parser.add_argument(
            "--mwf_block_frames", "--mwf-block-frames", type=int, default=512,
            help="frames per Wiener-filter block, 1..512 (default 512: one segment, 11.9 s)",
        )
        parser.add_argument("--codec", default="wav", help="wav, flac, mp3, ogg or m4a")
        parser.add_argument("--bitrate", default="128k")
        parser.add_argument("--limit", type=int, default=None, help="only the first N manifest rows")
        parser.add_argument("--batch_size", type=int, default=4, help="segments per inference batch (may mix tracks)")
        parser.add_argument("--no_skip_existing", dest="skip_existing", action="store_false", default=True, help="separate finished tracks again")
        parser.add_argument(
            "--inference_accelerator", default=None,
            help="resource hint for the inference stage only, e.g. 'type:nvidia-tesla-t4;count:1;install-nvidia-driver' (launch/dataflow.py sets it)",
        )


class EvaluateOptions(PipelineOptions):
    """The evaluation job's own options; it also takes StembeamOptions (--output, --model, --mwf, ...)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--dataset", default=None,
            help="folder of <track>/{mixture,vocals,...}.wav|flac (optionally under train/ test/), of *.stem.mp4 files, or a manifest "
            "(uri + one column per stem)",
        )
        parser.add_argument(
            "--split", default=None,
            help="split to evaluate: default 'test' when the dataset has one (MUSDB's scores are on its test set), else every track; 'all' for every track",
        )
        parser.add_argument(
            "--estimates", default=None,
            help="score existing stems {estimates}/{track_id}/{stem}.* (e.g. a pipeline's stems/ folder) instead of separating",
        )


class PrepareOptions(PipelineOptions):
    """The training-data job's own options (``stembeam prepare-dataset``); ``--dataset`` is
    EvaluateOptions', ``--output`` and ``--limit`` StembeamOptions' (Beam parses every
    subclass into one parser: a flag defined twice would take one definition's default)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--model_config", "--model-config", default="spleeter:2stems", help="spleeter:2stems|4stems|5stems or a CONFIG.json")
        parser.add_argument("--seed", type=int, default=0, help="seed of the random crops and augmentation")
        parser.add_argument("--repeat", type=int, default=1, help="random crops per segment length of audio")
        parser.add_argument("--augment", action="store_true", default=False, help="random gain per stem and left/right swap (mixture = sum of stems)")
        parser.add_argument(
            "--mixture_from_stems", "--mixture-from-stems", action="store_true", default=False,
            help="use the sum of the stems as the mixture (for files whose mixture is not that sum)",
        )
        parser.add_argument("--shards", type=int, default=4, help="TFRecord files per split")


class FeatureOptions(PipelineOptions):
    """MIR features: ``stembeam features`` (--input) and ``stembeam pipeline --features``."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--input", default=None, help="stembeam features: a stembeam pipeline output (has metadata/) or a folder of <track>/<source>.wav|flac|mp3... folders")
        parser.add_argument("--features", action="store_true", default=False, help="stembeam pipeline: also compute MIR features into {output}/features/")
        parser.add_argument("--vocal_pitch", "--vocal-pitch", action="store_true", default=False, help="features: vocal f0 with pYIN (slow)")
        parser.add_argument("--feature_frames", "--feature-frames", action="store_true", default=False, help="features: also write per-frame series (frames-*.parquet)")
        parser.add_argument("--feature_plots", "--feature-plots", action="store_true", default=False, help="features: one PNG per track under {output}/features/plots/")
