"""``python -m pipeline ...``: the corpus job (same as ``stembeam pipeline``)."""
import sys

from pipeline.cli import exit_now, main

exit_now(main(["pipeline", *sys.argv[1:]]))
