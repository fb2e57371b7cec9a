"""``python -m stembeam.pipeline ...``: the corpus job (same as ``stembeam pipeline``)."""
import sys

from stembeam.pipeline.cli import enable_startup_tricks, exit_now, main

enable_startup_tricks()
exit_now(main(["pipeline", *sys.argv[1:]]))
