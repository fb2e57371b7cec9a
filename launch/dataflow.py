"""Submit the corpus job to Google Cloud Dataflow with GPU inference.

    python -m stembeam.launch.dataflow --project P --region R --bucket gs://B --image IMAGE \\
        -- --manifest gs://B/manifest.csv --output gs://B/out [--model gs://B/models/2stems] [--mwf] ...

Everything after ``--`` goes to ``stembeam pipeline``. ``--dry-run FILE`` builds and stages the
Dataflow job as a template written to the local FILE (the job JSON: options, environment,
worker image and the pipeline with its steps and resource hints) and submits nothing.
"""
from __future__ import annotations

import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_GPU = "nvidia-tesla-t4"


def accelerator(gpu_type: str, count: int) -> str:
    """Dataflow's accelerator value: ``type:T;count:N;install-nvidia-driver``."""
    return f"type:{gpu_type};count:{count};install-nvidia-driver"


def dataflow_args(args) -> list:
    """The Beam options of a Dataflow GPU run (see launch/README.md)."""
    bucket = args.bucket.rstrip("/")
    gpu = accelerator(args.gpu_type, args.gpu_count)
    argv = [
        "--runner=DataflowRunner",
        f"--project={args.project}",
        f"--region={args.region}",
        f"--temp_location={bucket}/tmp",
        f"--staging_location={bucket}/staging",
        f"--job_name={args.job_name}",
        f"--worker_machine_type={args.machine_type}",
        "--experiments=use_runner_v2",
        f"--sdk_container_image={args.image}",
        f"--setup_file={os.path.join(REPO, 'setup.py')}",
        f"--max_num_workers={args.max_workers}",
        # The separation step asks for the GPU with a resource hint (Dataflow fits workers to
        # it under Runner v2); the service option below gives every worker the driver and GPU
        # unless --right-fitting leaves the other stages on CPU-only workers.
        f"--inference_accelerator={gpu}",
    ]
    if not args.right_fitting:
        argv.append(f"--dataflow_service_options=worker_accelerator={gpu}")
    if args.dry_run:
        # A template written to a local file instead of a submission: the runner builds and
        # stages everything as for a real run, then stops (--no_auth: no Dataflow API call).
        argv += [f"--template_location={os.path.abspath(args.dry_run)}", "--no_auth"]
    return argv


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m stembeam.launch.dataflow", description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", required=True)
    parser.add_argument("--region", required=True)
    parser.add_argument("--bucket", required=True, help="gs://bucket[/prefix] for temp and staging files")
    parser.add_argument("--image", required=True, help="worker image built from launch/Dockerfile, e.g. REGION-docker.pkg.dev/P/stembeam/worker:TAG")
    parser.add_argument("--job-name", default="stembeam-pipeline")
    parser.add_argument("--machine-type", default="n1-standard-8")
    parser.add_argument("--gpu-type", default=DEFAULT_GPU)
    parser.add_argument("--gpu-count", type=int, default=1)
    parser.add_argument("--max-workers", type=int, default=4)
    parser.add_argument("--right-fitting", action="store_true", help="GPU only for the separation step (resource hint), no worker-wide accelerator")
    parser.add_argument("--dry-run", metavar="FILE", default=None, help="build the job, do not submit it; write its description to FILE")
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    args = build_parser().parse_args(argv[:split])
    if not os.path.isfile(os.path.join(REPO, "setup.py")):
        # Workers install stembeam from the package Beam builds out of setup.py.
        print(f"error: {REPO} has no setup.py: submit Dataflow jobs from a stembeam source checkout (git clone), not an installed wheel",
              file=sys.stderr)
        return 2
    pipeline_argv = argv[split + 1 :] + dataflow_args(args)
    from stembeam.pipeline.corpus import run, run_pipeline

    if not args.dry_run:
        return run(pipeline_argv)
    # Nothing of the output is touched: no model export, no sweep, no metadata change.
    run_pipeline(pipeline_argv, dry_run=True)
    print(f"dry run: Dataflow job template written to {args.dry_run} (not submitted)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
