"""`ct`: the Conversation Tracker command line: one parser, each command group adds its own.

Every leaf command's parser names its handler (`set_defaults(handler=...)`), so the parser tree
is the dispatch table: `ct store set-mask` runs `stores.cmd_set_mask`, and a command without a
handler cannot be added by mistake (a test walks the tree).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, NoReturn

from worker.cli import (
    accounts,
    aliases,
    audit,
    dlq,
    events,
    keys,
    mail,
    retention,
    schemas,
    stores,
    subjects,
    workers,
)
from worker.cli.usage import UsageError
from worker.core.config import ConfigError, Settings, Unreachable, load_settings
from worker.devtools.emit import EmitError

Handler = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]
# In the order `ct --help` lists them.
GROUPS = (
    workers, events, stores, aliases, subjects, retention, dlq, keys, mail, accounts, audit,
    schemas,
)  # fmt: skip


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see `{self.prog} --help`)")


def build_parser() -> OneLineParser:
    parser = OneLineParser(
        prog="ct",
        description="Conversation Tracker: masked order conversations, notifier, relay, timeline.",
        epilog="Settings come from CT_* environment variables; see README.md.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        settings = load_settings()
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"ct: {exc}", file=sys.stderr)
        return 2
    from worker.core.logging import configure_logging

    configure_logging(settings.log_level, settings.log_format, settings.domain)
    handler: Handler = args.handler
    try:
        return asyncio.run(_explained(handler, args, settings))
    except (ConfigError, Unreachable) as exc:
        # A bad setting is the process's; a refusal or an unreachable server, the command's.
        where = "ct" if type(exc) is ConfigError else f"ct {_command(args)}"
        print(f"{where}: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, Unreachable) else 2
    except (UsageError, EmitError) as exc:
        print(f"ct {args.command}: {exc}" if isinstance(exc, EmitError) else exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


async def _explained(handler: Handler, args: argparse.Namespace, settings: Settings) -> int:
    """Run the command; a server that refuses or cannot be reached becomes one line."""
    from worker.apps.failures import explain

    try:
        return await handler(args, settings)
    except Exception as exc:
        problem = explain(exc, settings)
        if problem is None or problem is exc:
            raise
        raise problem from None


def _command(args: argparse.Namespace) -> str:
    words = [args.command, getattr(args, "action", None), getattr(args, "server", None)]
    return " ".join(filter(None, words))


if __name__ == "__main__":
    sys.exit(main())
