"""One measurement of a bench run: its result, its time, the machine's load and the servers' CPU."""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from bench.env import BenchEnv


async def step(
    env: BenchEnv,
    results: dict[str, Any],
    section: str,
    name: str,
    work: Callable[[], Awaitable[Any]],
) -> Any:
    """Run one measurement; a failure is recorded in the results and the run goes on.

    Beside the result, `resources[name]` keeps the step's wall time, the load average around it
    (the machine is shared: a load above its CPU count means the numbers of this step are low)
    and the CPU seconds each server of a private stack spent during it.
    """
    print(f"bench: {section}/{name} ...", flush=True)
    started, load = time.monotonic(), os.getloadavg()[0]
    cpu_before = env.server_cpu()
    try:
        value = await work()
    except Exception as exc:
        traceback.print_exc()
        value = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    results.setdefault(section, {})[name] = value
    cpu_after = env.server_cpu()
    results.setdefault("resources", {})[name] = {
        "section": section,
        "seconds": round(time.monotonic() - started, 1),
        "load1_start": round(load, 2),
        "load1_end": round(os.getloadavg()[0], 2),
        "cpu_s": {k: round(cpu_after[k] - cpu_before.get(k, 0.0), 2) for k in cpu_after},
    }
    print(f"bench: {section}/{name} done in {time.monotonic() - started:.1f}s", flush=True)
    return value
