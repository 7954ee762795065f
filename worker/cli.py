"""`ct`: the Conversation Tracker command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, NoReturn

from worker.config import ConfigError, Settings, Unreachable, load_settings
from worker.emit import EmitError
from worker.usage import UsageError

STATUSES = ["PAYMENT_APPROVED", "HANDLING", "INVOICED", "SHIPPED", "DELIVERED", "CANCELED"]


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

    run = sub.add_parser("run", help="run a worker until SIGTERM/SIGINT")
    run.add_argument("worker", choices=["notifier", "relay", "projector", "all"])

    sink = sub.add_parser(
        "sink", help="SMTP capture server: files every message as .eml + index.jsonl"
    )
    sink.add_argument("--host", default="127.0.0.1")
    sink.add_argument("--port", type=int, default=1025)
    sink.add_argument("--dir", type=Path, required=True, help="where captured messages are written")

    check = sub.add_parser("check", help="wait until a server answers (exit 1 after --timeout)")
    check.add_argument("server", choices=["kafka", "mongo", "smtp"])
    check.add_argument("--timeout", type=float, default=30.0)
    check.add_argument("--host", help="SMTP host (smtp only; default: CT_SMTP_HOST)")
    check.add_argument(
        "--port", type=int, help="SMTP port (smtp only; default: CT_SMTP_PORT; TLS: CT_SMTP_TLS)"
    )

    topics = sub.add_parser("topics", help="Kafka topics")
    topics_sub = topics.add_subparsers(dest="action", required=True, parser_class=OneLineParser)
    create = topics_sub.add_parser("create", help="create the project's topics (idempotent)")
    create.add_argument("--partitions", type=int, help="default: CT_TOPIC_PARTITIONS")
    create.add_argument("--replication", type=int, help="default: CT_TOPIC_REPLICATION")

    timeline = sub.add_parser("timeline", help="print an order's conversation from MongoDB")
    timeline.add_argument("order_id")
    timeline.add_argument("--json", action="store_true", help="the timeline as JSON")

    _add_event_commands(sub)
    _add_operator_commands(sub)
    demo = sub.add_parser("demo", help="the scripted end-to-end story on the local stack")
    demo.add_argument("--orders", type=int, default=2, help="orders per store")
    return parser


def _add_event_commands(sub: Any) -> None:
    emit = sub.add_parser("emit", help="produce one order-status event to Kafka")
    emit.add_argument("--order", required=True)
    emit.add_argument("--store", required=True, help="store id")
    emit.add_argument("--status", required=True, choices=STATUSES)
    emit.add_argument("--customer-email", required=True)
    emit.add_argument("--customer-name", default="Jane Doe", help="'First Last'")
    emit.add_argument("--customer-locale")
    emit.add_argument("--store-name", default="Example Store")
    emit.add_argument("--store-email", required=True)
    emit.add_argument("--store-locale")
    emit.add_argument("--event-id", help="default: a new UUID")
    emit.add_argument("--total", type=int, help="order total in cents")
    emit.add_argument("--currency", help="ISO 4217, e.g. BRL")
    emit.add_argument("--invoice-number")
    emit.add_argument("--invoice-url")
    emit.add_argument("--carrier")
    emit.add_argument("--tracking-code")
    emit.add_argument("--tracking-url")
    emit.add_argument(
        "--item", action="append", default=[], metavar="QTYxNAME", help="e.g. 2xSocks"
    )

    preview = sub.add_parser(
        "preview", help="render a notification email to a file and print its path"
    )
    preview.add_argument("status", choices=STATUSES)
    preview.add_argument("--locale", default="en")
    preview.add_argument("--store", default="demo-store", help="store id (for template overrides)")
    preview.add_argument("--out", type=Path, help="output file (default: a temporary .eml)")


def _add_operator_commands(sub: Any) -> None:

    store = sub.add_parser("store", help="store settings")
    store_sub = store.add_subparsers(dest="action", required=True, parser_class=OneLineParser)
    set_mask = store_sub.add_parser("set-mask", help="choose hard or soft aliases for new orders")
    set_mask.add_argument("store_id")
    set_mask.add_argument("mask", choices=["hard", "soft"])
    show = store_sub.add_parser("show", help="print a store's settings")
    show.add_argument("store_id")

    alias = sub.add_parser("alias", help="aliases")
    alias_sub = alias.add_subparsers(dest="action", required=True, parser_class=OneLineParser)
    resolve = alias_sub.add_parser(
        "resolve", help="which order and role an alias belongs to (audited)"
    )
    resolve.add_argument("alias")
    resolve.add_argument("--reason", required=True, help="why you look: written to the audit log")
    resolve.add_argument("--reveal", action="store_true", help="also print the real address")
    resolve.add_argument("--operator", help="who asks (default: $USER)")

    dlq = sub.add_parser("dlq", help="dead letters")
    dlq_sub = dlq.add_subparsers(dest="action", required=True, parser_class=OneLineParser)
    dlq_list = dlq_sub.add_parser("list", help="print the dead letters with their reasons")
    dlq_list.add_argument("--limit", type=int, default=50)
    replay = dlq_sub.add_parser("replay", help="re-publish dead letters to their original topics")
    replay.add_argument("--since", help="only records dead-lettered at or after this ISO time")
    replay.add_argument("--dry-run", action="store_true", help="list what would be replayed")
    replay.add_argument(
        "--group", default="ct-dlq-replay", help="consumer group that tracks replay progress"
    )

    keys = sub.add_parser("keys", help="encryption keys")
    keys_sub = keys.add_subparsers(dest="action", required=True, parser_class=OneLineParser)
    keys_sub.add_parser("reencrypt", help="re-encrypt stored addresses under the current key")
    sub.add_parser("keygen", help="print a new CT_ENCRYPTION_KEY")


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
    from worker.logging import configure_logging

    configure_logging(settings.log_level, settings.log_format, settings.domain)
    handler = _dispatch(args)
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


Handler = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]


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


def _dispatch(args: argparse.Namespace) -> Handler:
    from worker import commands

    name = args.command + (f"_{args.action}" if getattr(args, "action", None) else "")
    handler: Handler = getattr(commands, "cmd_" + name.replace("-", "_"))
    return handler


if __name__ == "__main__":
    sys.exit(main())
