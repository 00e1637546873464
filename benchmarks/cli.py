"""What every benchmarks/ command line shares: one-line usage errors and bad input, exit code 2.

Kept free of heavy imports: the CLIs import it before parsing, so ``--help`` stays instant.
"""
from __future__ import annotations

import argparse


class BadInput(Exception):
    """A problem with the command line or its files: reported in one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse with the module docstring as help, and usage errors in one line with exit code 2
    (argparse would print the whole usage first)."""

    def __init__(self, prog: str | None = None, doc: str | None = None, **kwargs) -> None:
        if doc:
            paragraphs = doc.split("\n\n")
            kwargs.update(description=paragraphs[0], epilog="\n\n".join(paragraphs[1:]))
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(prog=prog, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")
