"""The `ct` command: `main` parses, loads the settings and runs one command group's handler."""

from worker.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
