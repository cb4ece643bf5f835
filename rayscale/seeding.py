"""Seeds derived from integers, the same in every process and on every resume: sampling seeds come from
`(algo.seed, iteration, prompt index)`, so a resumed run draws exactly what an uninterrupted one would have."""

from __future__ import annotations

import random


def stable_seed(*parts: int) -> int:
    """A stable 31-bit seed from integers (Python's hash() of tuples is salted per process for str, not int)."""
    return random.Random("-".join(map(str, parts))).getrandbits(31)
