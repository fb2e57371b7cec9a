"""The shape of stembeam's code (not a test): its longest functions, their parameters, and
README.md's length, for a checkout (default: this one) or a git revision.

  .venv/bin/python -m tests.benchmarks.code_shape [--rev REV] [--top 10]
"""
from __future__ import annotations

import argparse
import ast
import os
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FOLDERS = ("stembeam", "model", "pipeline", "transforms", "launch")


def _sources(rev: str | None) -> dict:
    """``{path: text}`` of the package's .py files at ``rev`` (None: the working tree)."""
    if rev is None:
        found = {}
        for folder in FOLDERS:
            for parent, dirs, files in os.walk(os.path.join(REPO, folder)):
                dirs[:] = [d for d in dirs if d != "__pycache__"]
                for name in files:
                    if name.endswith(".py"):
                        path = os.path.join(parent, name)
                        with open(path, encoding="utf-8") as handle:
                            found[os.path.relpath(path, REPO)] = handle.read()
        return found
    names = subprocess.run(["git", "ls-tree", "-r", "--name-only", rev, *FOLDERS], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    return {name: subprocess.run(["git", "show", f"{rev}:{name}"], cwd=REPO, capture_output=True, text=True, check=True).stdout
            for name in names if name.endswith(".py")}


def functions(sources: dict, code_only: bool = False) -> list:
    """``(lines, parameters, path:qualified name)`` of every function and method (``code_only``:
    lines without the docstring, so that Args:/Returns: sections do not count as length)."""
    found = []
    for path, text in sources.items():
        tree = ast.parse(text)

        def visit(node, prefix):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    args = child.args
                    count = len(args.posonlyargs) + len(args.args) + len(args.kwonlyargs) + bool(args.vararg) + bool(args.kwarg)
                    if args.args and args.args[0].arg in ("self", "cls"):
                        count -= 1
                    lines = child.end_lineno - child.lineno + 1
                    first = child.body[0]
                    if code_only and isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant) \
                            and isinstance(first.value.value, str):
                        lines -= first.end_lineno - first.lineno + 1
                    found.append((lines, count, f"{path}:{prefix}{child.name}"))
                    visit(child, f"{prefix}{child.name}.")
                elif isinstance(child, ast.ClassDef):
                    visit(child, f"{prefix}{child.name}.")

        visit(tree, "")
    return found


def readme_lines(rev: str | None) -> int:
    if rev is None:
        with open(os.path.join(REPO, "README.md"), encoding="utf-8") as handle:
            return len(handle.read().splitlines())
    return len(subprocess.run(["git", "show", f"{rev}:README.md"], cwd=REPO, capture_output=True, text=True, check=True).stdout.splitlines())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default=None, help="a git revision (default: the working tree)")
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--with-docstrings", dest="code_only", action="store_false", help="count docstring lines too")
    args = parser.parse_args()
    found = functions(_sources(args.rev), args.code_only)
    print(f"{'lines':>5} {'params':>6}  function ({args.rev or 'working tree'}; lines {'without' if args.code_only else 'with'} docstrings)")
    for lines, params, name in sorted(found, reverse=True)[: args.top]:
        print(f"{lines:5d} {params:6d}  {name}")
    print(f"functions with more than 7 parameters: {sum(params > 7 for _, params, _ in found)}; most: {max(p for _, p, _ in found)}")
    print(f"README.md: {readme_lines(args.rev)} lines")


if __name__ == "__main__":
    main()
