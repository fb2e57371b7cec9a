"""``python -m stembeam.pipeline ...``: the corpus job (same as ``stembeam pipeline``)."""
import sys

from stembeam.pipeline.cli import exit_now, main

exit_now(main(["pipeline", *sys.argv[1:]]))
