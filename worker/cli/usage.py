"""The error of a bad `ct` argument, shared by the parser (cli.py) and the commands."""

from __future__ import annotations


class UsageError(Exception):
    """A bad argument: printed as one line naming what to fix, exit status 2."""
