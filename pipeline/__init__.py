"""stembeam's jobs and command line: wiring of model/ and transforms/, and their options."""

__version__ = "0.1.0"
