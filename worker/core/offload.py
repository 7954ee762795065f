"""CPU work proportional to a message's size, off the event loop when the message is large.

Parsing, hashing or sealing megabytes on the loop would stall every other SMTP session and
consumer; for a typical message the thread hop costs more than the work, so it stays inline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final, ParamSpec, TypeVar

INLINE_MAX_BYTES: Final = 256 * 1024

P = ParamSpec("P")
T = TypeVar("T")


async def off_loop_if_large(
    size: int,
    work: Callable[P, T],
    /,
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """`work(*args, **kwargs)`, in a thread when `size` (bytes of input) is over the threshold."""
    return await off_loop_over(INLINE_MAX_BYTES, size, work, *args, **kwargs)


async def off_loop_over(
    inline_max: int, size: int, work: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
) -> T:
    """`work(*args, **kwargs)`, in a thread when `size` is over `inline_max` (work that costs
    more per byte than a parse has a lower threshold of its own)."""
    if size > inline_max:
        return await asyncio.to_thread(work, *args, **kwargs)
    return work(*args, **kwargs)
