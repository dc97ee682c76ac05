"""Seeds of resumable jobs: each random draw gets a seed that is a pure function of its place in
the job (run seed, iteration, task, sample index, ...), never of a stream that earlier work
advanced, so a job resumed after a kill (which skips finished work) draws what an
uninterrupted run draws."""

from __future__ import annotations

import hashlib
import json


def derived_seed(*parts: object) -> int:
    """A seed in ``[0, 2**31)`` that depends only on ``parts`` (JSON-encodable values).

    >>> derived_seed(0, "sample", 1, "syn_add") == derived_seed(0, "sample", 1, "syn_add")
    True
    >>> derived_seed(0, "sample", 1, "syn_add") != derived_seed(0, "sample", 2, "syn_add")
    True
    """
    digest = hashlib.sha256(json.dumps(parts, separators=(",", ":"), sort_keys=True).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


__all__ = ["derived_seed"]
