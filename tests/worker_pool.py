"""An SDK worker pool for portable runners, listening on 127.0.0.1 only (Beam's
``worker_pool_main`` binds every interface). Each job's SDK workers are its child processes.

    python -m tests.worker_pool PORT
"""
import sys

import grpc
from apache_beam.portability.api import beam_fn_api_pb2_grpc
from apache_beam.runners.worker.worker_pool_main import BeamFnExternalWorkerPoolServicer
from apache_beam.utils import thread_pool_executor


def main(port: int) -> None:
    server = grpc.server(thread_pool_executor.shared_unbounded_instance())
    server.add_insecure_port(f"127.0.0.1:{port}")
    beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(BeamFnExternalWorkerPoolServicer(use_process=True), server)
    server.start()
    print(f"worker pool on 127.0.0.1:{port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main(int(sys.argv[1]))
