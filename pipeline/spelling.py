"""Option spellings every command takes: ``--mwf_block_frames`` and ``--mwf-block-frames`` alike,
and a "did you mean" for an option no command knows."""
from __future__ import annotations

import argparse
import difflib
from typing import Iterable

from stembeam._compat import argparse_option_strings


def respell(argv: list, known: Iterable[str]) -> list:
    """``argv`` with each long option the command does not know under its spelling but knows with
    ``_`` and ``-`` swapped written the known way (``--bit-depth 24`` -> ``--bit_depth 24``)."""
    known = set(known)
    out = []
    for arg in argv:
        if arg == "--":
            out.extend(argv[len(out):])
            break
        name, sep, value = arg.partition("=")
        if arg.startswith("--") and name not in known:
            for other in ("--" + name[2:].replace("_", "-"), "--" + name[2:].replace("-", "_")):
                if other in known:
                    arg = other + sep + value
                    break
        out.append(arg)
    return out


def did_you_mean(flag: str, known: Iterable[str]) -> str:
    """`` (did you mean --x?)`` for the known option closest to ``flag``, or ""."""
    match = difflib.get_close_matches(flag.split("=", 1)[0], list(known))
    return f" (did you mean {match[0]}?)" if match else ""


class Parser(argparse.ArgumentParser):
    """An argparse parser that takes both spellings of its long options and answers an unknown
    option with the closest one it knows (no abbreviations: a misspelt option is not taken for
    another one, as the Beam jobs' parser takes none)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args=None, namespace=None):
        import sys

        args = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(respell(args, argparse_option_strings(self)), namespace)

    def error(self, message):
        """One line, as every command's errors (no usage block): ``error: PROG: MESSAGE``, exit 1."""
        import sys

        print(f"error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(1)

    def parse_args(self, args=None, namespace=None):
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            known = argparse_option_strings(self)
            words = [f"unknown option {arg}{did_you_mean(arg, known)}" if arg.startswith("-") else f"unexpected argument {arg!r}"
                     for arg in extras]
            self.error("; ".join(words))
        return parsed
