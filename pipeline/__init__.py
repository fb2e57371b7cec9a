"""stembeam's jobs and command line: wiring of model/ and transforms/, and their options."""
from stembeam import __version__  # noqa: F401 - recorded in every metadata row
