"""The runner of local jobs: Beam's FnApiRunner, always, with no download.

Beam 2.72's ``DirectRunner`` first tries ``PrismRunner``, a Go binary it downloads from GitHub
at run time (apache_beam/runners/direct/direct_runner.py, SwitchingDirectRunner.run_pipeline),
and falls back to the FnApiRunner when that fails. So a machine without internet ran the
FnApiRunner (the runner every stembeam test covers) while a user's machine with internet would
download and run Prism, whose bundles are formed differently (the one-stage job relies on a
track's segments staying in one bundle). stembeam's local runs (no ``--runner``, or
``--runner DirectRunner``) therefore run on the FnApiRunner directly, set up as the
DirectRunner sets it up after Prism. ``--runner PrismRunner`` still chooses Prism explicitly.
"""
from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

# Names under which a job asks for the local runner.
DIRECT_NAMES = (None, "DirectRunner", "direct", "SwitchingDirectRunner")


def is_direct(options: PipelineOptions) -> bool:
    """Whether ``options`` ask for the local runner (no --runner, or DirectRunner)."""
    return options.view_as(StandardOptions).runner in DIRECT_NAMES


def local_runner(options: PipelineOptions):
    """The FnApiRunner for a local job, its workers given ``options`` (what the DirectRunner's
    fallback gives them), or None when ``options`` name another runner."""
    if not is_direct(options):
        return None
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    return fn_runner.FnApiRunner(provision_info=fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)))


def make_pipeline(options: PipelineOptions):
    """A ``beam.Pipeline`` for ``options``: on the FnApiRunner for local runs (see above)."""
    import apache_beam as beam

    return beam.Pipeline(runner=local_runner(options), options=options)
