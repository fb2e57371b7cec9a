"""``python -m stembeam ...``: the ``stembeam`` program (separate, pipeline, features, evaluate, ...)."""
from stembeam.pipeline.cli import entry

if __name__ == "__main__":
    entry()
