"""``python -m pipeline ...``: the corpus job (same as ``stembeam pipeline``)."""
import sys

from pipeline.cli import main

sys.exit(main(["pipeline", *sys.argv[1:]]))
