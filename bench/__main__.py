"""`python -m bench`: ceilings and worker stages side by side in one run, on one machine.

python -m bench                      the shared stack (`make bench` starts it), 20k events
python -m bench --private-stack      a Kafka + FerretDB of the bench's own, deleted after
python -m bench --quick              small sizes, a smoke run
python -m bench --only relay_hostile one step alone, to check it (no ceilings, no stages)
python -m bench --private-stack --only ledger   the ledger write alone, on each backend
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

from bench import ceilings, hostile, memory, pipelines, relay, report, scaling, stages
from bench.env import BenchEnv, bench_env
from bench.processes import REPO, BenchError
from bench.steps import step
from bench.workload import rendered_messages

SAFE_BATCH = 100
# Relay messages: every one scans the aliases collection three times on FerretDB 1.24.
RELAY_MAX = 2_000
STAGES = ("notifier", "latency", "projector", "relay", "scale-out", "backends", "memory")
# Steps that `--only` runs alone (each also runs in the whole bench, in its stage).
ALONE = ("relay_hostile", "ledger")
# (stage, upstream, load generator): the target run first, loaded by Postfix's smtp-source (C,
# so that the load does not take the relay's CPU), then the bench's own aiosmtplib client, then
# the capture server as before.
RELAY_RUNS = (
    ("relay", "smtp-sink", "smtp-source", True),
    # The same load with sender authentication off: what SPF, DKIM and DMARC cost.
    ("relay_without_auth", "smtp-sink", "smtp-source", False),
    ("relay_aiosmtplib", "smtp-sink", "aiosmtplib", True),
    ("relay_capture", "capture", "aiosmtplib", True),
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, help="events per stage (default 20000; quick 2000)")
    parser.add_argument(
        "--rss-events", type=int, help="events for the large RSS mark (default 200000)"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--private-stack", action="store_true", help="start a stack of our own")
    parser.add_argument(
        "--out", type=Path, help="default bench/results.json (with --only, results-STEP.json)"
    )
    parser.add_argument("--skip", action="append", choices=STAGES, default=[])
    parser.add_argument("--only", choices=ALONE, help="run this one step and nothing else")
    parser.add_argument("--profile", action="store_true", help="py-spy the workers (20 s each)")
    parser.add_argument("--stage-timeout", type=float, help="seconds per stage (default 900)")
    parser.add_argument(
        "--rss-timeout", type=float, help="seconds for the RSS stage (default 2400)"
    )
    args = parser.parse_args(argv)
    # A step run alone never overwrites the last whole run's results.
    args.out = args.out or REPO / "bench" / (
        f"results-{args.only}.json" if args.only else "results.json"
    )
    args.events = args.events or (2_000 if args.quick else 20_000)
    args.rss_small = 2_000 if args.quick else 10_000
    args.rss_events = args.rss_events or (20_000 if args.quick else 200_000)
    args.latency_s = 5.0 if args.quick else 30.0
    args.stage_timeout = args.stage_timeout or (300.0 if args.quick else 900.0)
    args.rss_timeout = args.rss_timeout or (300.0 if args.quick else 2400.0)
    args.ceiling_budget = 30.0 if args.quick else 90.0
    if args.events < 10 or args.rss_events <= args.rss_small:
        parser.error("--events must be >= 10 and --rss-events above the small RSS mark")
    return args


def _git_rev() -> str:
    result = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() or "unknown"


async def run(args: argparse.Namespace, env: BenchEnv, results: dict[str, Any]) -> None:
    """Every section into `results`, which the caller writes out even when a section fails."""
    settings, n, timeout = env.base, args.events, args.stage_timeout
    pool = settings.smtp_pool_size
    results |= {
        "meta": {
            "run_id": env.run_id,
            "git": _git_rev(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "stack": "private" if args.private_stack else "shared",
            "brokers": env.brokers,
            "cpus": os.cpu_count(),
            "load_avg_at_start": os.getloadavg(),
            "events": n,
            "smtp_pool_size": pool,
            "batch_max_records": settings.batch_max_records,
            "notifier_concurrency": settings.notifier_concurrency,
            "upstreams": {u.name: u.port for u in env.upstreams.values()},
        }
    }
    if args.only:
        await _alone(args.only, results, env, timeout)
        return
    mails = rendered_messages(settings.domain)
    results["cpu"] = await asyncio.to_thread(ceilings.cpu_paths, min(n, 5_000), settings.domain)
    results["pipelines"] = await asyncio.to_thread(
        pipelines.all_stages, n, settings.domain, relay.sample_mails(settings.domain)
    )
    for target in env.upstreams.values():
        await step(
            env,
            results,
            "ceilings",
            f"smtp_send {target.name}",
            partial(ceilings.smtp_send, target.port, n, pool, mails),
        )
    await step(
        env,
        results,
        "ceilings",
        "smtp_source smtp-sink",
        lambda: ceilings.smtp_source_send(env.upstreams["smtp-sink"].port, n, mails),
    )
    await step(env, results, "diagnostics", "kafka_warm_up", partial(scaling.warm_up, env, n))
    bulk = await env.create(env.names("bulk"))
    await step(
        env,
        results,
        "ceilings",
        "bulk_write",
        lambda: ceilings.bulk_upsert(bulk.settings, n, args.ceiling_budget),
    )
    skip = set(args.skip)
    if "notifier" not in skip:
        await notifier_stages(results, args, env)
    if "projector" not in skip:
        await projector_stages(results, args, env)
    if "relay" not in skip:
        m = max(10, min(n // 4, RELAY_MAX))
        for stage, upstream, load, authenticate in RELAY_RUNS:
            await step(
                env,
                results,
                "stages",
                stage,
                partial(
                    relay.relay,
                    env,
                    m,
                    pool=pool if load == "aiosmtplib" else relay.SOURCE_SESSIONS,
                    limit_s=timeout,
                    profile=args.profile and stage == "relay",
                    upstream=upstream,
                    load=load,
                    stage=stage,
                    authenticate=authenticate,
                ),
            )
        await _relay_hostile(results, env, timeout)
    if "backends" not in skip:
        await scaling.backends(results, env, n, limit_s=timeout)
    if "memory" not in skip:
        results["memory"] = (
            await step(
                env,
                results,
                "stages",
                "memory",
                lambda: memory.memory(
                    env, args.rss_small, args.rss_events, limit_s=args.rss_timeout
                ),
            )
            or {}
        )
        results["stages"].pop("memory", None)
    # Last: it swaps the private stack's broker for a three-broker cluster.
    if "scale-out" not in skip:
        try:
            await env.use_cluster()
        except BenchError as exc:
            results["scale_out"] = {"error": f"no three-broker cluster: {exc}"[:800]}
        else:
            results["meta"]["brokers_scale_out"] = env.brokers
            await scaling.scale_out(results, env, n, limit_s=timeout)


async def _alone(step_name: str, results: dict[str, Any], env: BenchEnv, limit_s: float) -> None:
    """One of the steps of ALONE, and nothing else."""
    if step_name == "relay_hostile":
        await _relay_hostile(results, env, limit_s)
    elif step_name == "ledger":
        for backend in env.mongo_backends:
            await scaling.ledger(results, env, backend)


async def _relay_hostile(results: dict[str, Any], env: BenchEnv, limit_s: float) -> None:
    """A 1 MB hostile DSN and a message with hostile DKIM keys while another client is timed."""
    await step(
        env,
        results,
        "diagnostics",
        "relay_hostile",
        lambda: hostile.hostile(env, limit_s=min(limit_s, 300.0)),
    )


async def notifier_stages(results: dict[str, Any], args: argparse.Namespace, env: BenchEnv) -> None:
    """Against smtp-sink (the target), against the capture server, and without the one-duplicate
    bound; then the raw Kafka read of the same events, the alias reads and the latency probe."""
    n, timeout, pool = args.events, args.stage_timeout, env.base.smtp_pool_size
    notifier = await step(
        env,
        results,
        "stages",
        "notifier",
        lambda: stages.notifier(env, n, limit_s=timeout, profile=args.profile),
    )
    for stage, upstream, unrecorded in (
        ("notifier_capture", "capture", 1),
        ("notifier_unrecorded_pool", "smtp-sink", pool),
    ):
        await step(
            env,
            results,
            "stages",
            stage,
            partial(
                stages.notifier,
                env,
                n,
                limit_s=timeout,
                profile=False,
                stage=stage,
                max_unrecorded=unrecorded,
                upstream=upstream,
            ),
        )
    names = env.names("notifier")
    await step(
        env,
        results,
        "ceilings",
        "kafka_consume",
        lambda: ceilings.kafka_consume(
            names.settings, names.order_topic, n, f"{names.prefix}-ceiling"
        ),
    )
    await step(
        env, results, "diagnostics", "alias_lookup", lambda: ceilings.alias_lookups(names.settings)
    )
    if "latency" not in args.skip and notifier.get("rate"):
        rate = float(notifier["rate"]) / 2
        await step(
            env,
            results,
            "stages",
            "latency",
            lambda: stages.latency(env, rate=rate, seconds=args.latency_s),
        )


async def projector_stages(
    results: dict[str, Any], args: argparse.Namespace, env: BenchEnv
) -> None:
    """As deployed first, on a private stack only: 500-record batches can wedge FerretDB.

    FerretDB 1.24 (SQLite) hangs a database for good on one update command with more than
    100 matching updates, which a 500-record batch over many known orders sends. A wedged
    shared database would stay wedged for everyone until FerretDB restarts, so on the shared
    stack the projector runs only with batches of SAFE_BATCH (at most ~50 orders per command).
    """
    n, limit_s = args.events, args.stage_timeout
    replay = await env.create(env.names("projwrites"))
    await step(
        env,
        results,
        "diagnostics",
        "projector_writes",
        lambda: ceilings.projector_writes(
            replay.settings, n, env.base.batch_max_records if args.private_stack else SAFE_BATCH
        ),
    )
    if args.private_stack:
        probe_db = f"ct_bench_{env.run_id}_wedge"
        env.databases.append(probe_db)
        await step(
            env,
            results,
            "diagnostics",
            "ferret_wedge",
            lambda: ceilings.ferret_wedge(env.base, probe_db),
        )
        deployed = await step(
            env,
            results,
            "stages",
            "projector_as_deployed",
            lambda: stages.projector(
                env, n, limit_s=limit_s, profile=False, batch=None, stage="projdeployed"
            ),
        )
        if not deployed.get("stalled"):
            results["stages"]["projector"] = results["stages"].pop("projector_as_deployed")
            results["resources"]["projector"] = results["resources"].pop("projector_as_deployed")
            return
    await step(
        env,
        results,
        "stages",
        "projector",
        lambda: stages.projector(
            env, n, limit_s=limit_s, profile=args.profile, batch=SAFE_BATCH, stage="projector"
        ),
    )


async def main_async(args: argparse.Namespace) -> int:
    results: dict[str, Any] = {}
    try:
        async with bench_env(private=args.private_stack) as env:
            await run(args, env, results)
            if args.profile:  # the raw profiles outlive the run's scratch directory
                kept = args.out.parent / "profiles"
                kept.mkdir(parents=True, exist_ok=True)
                for raw in env.workdir.glob("*.pyspy.txt"):
                    shutil.copy(raw, kept / raw.name)
    finally:
        if results:  # whatever was measured before a failure is kept
            if not args.only:  # the targets are the whole run's
                results["verdicts"] = report.verdicts(results)
            report.write(results, args.out)
    print()
    print(report.diagnostics(results) if args.only else report.table(results))
    print(f"\nresults: {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return asyncio.run(main_async(args))
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
