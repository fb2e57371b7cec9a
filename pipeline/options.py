"""The jobs' PipelineOptions, next to every Beam option; the flags themselves are defined in
pipeline/flags.py (no Beam import, so --help is instant)."""
from apache_beam.options.pipeline_options import PipelineOptions

from stembeam.pipeline import flags


class StembeamOptions(PipelineOptions):
    """--manifest and --output are checked by the job, not argparse: every PipelineOptions parses
    all registered subclasses, so a required flag here would break unrelated pipelines."""

    @classmethod
    def _add_argparse_args(cls, parser):
        flags.add_pipeline_args(parser)


class JobOptions(PipelineOptions):
    """What every stembeam job takes: -v/--verbose, --log_level, --progress_interval."""

    @classmethod
    def _add_argparse_args(cls, parser):
        flags.add_job_args(parser)


class EvaluateOptions(PipelineOptions):
    """The evaluation job's own options; it also takes StembeamOptions (--output, --model, --mwf, ...)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        flags.add_evaluate_args(parser)


class PrepareOptions(PipelineOptions):
    """The training-data job's own options (``stembeam prepare-dataset``); ``--dataset`` is
    EvaluateOptions', ``--output`` and ``--limit`` StembeamOptions'."""

    @classmethod
    def _add_argparse_args(cls, parser):
        flags.add_prepare_args(parser)


class FeatureOptions(PipelineOptions):
    """MIR features: ``stembeam features`` (--input) and ``stembeam pipeline --features``."""

    @classmethod
    def _add_argparse_args(cls, parser):
        flags.add_features_input_args(parser)
        flags.add_feature_args(parser)


class ReportOptions(PipelineOptions):
    """``--report`` of ``stembeam pipeline`` and ``stembeam features``: the web page after the job."""

    @classmethod
    def _add_argparse_args(cls, parser):
        flags.add_report_arg(parser)
