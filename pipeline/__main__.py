"""``python -m pipeline ...``: the corpus job (same as ``stembeam pipeline``)."""
import sys

from pipeline.corpus import run

sys.exit(run(sys.argv[1:]))
