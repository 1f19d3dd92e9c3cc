"""How results.json stores a long raw-sample list: as each process's distinct values and their counts, exactly.

A row's raw samples are rounded to 4 significant figures when measured (bench.measure.timing.round_sig), so a long
list repeats few values: the noop backend's closed-loop rows took 118,573 and 225,897 calls in results/serve/cpu/ (a
~2 us call, timed for the sampling plan's 1 s minimum) over about 1,000 distinct values each, and made up 3.5 of that
file's 5.8 MB. A list longer than PACK_MIN whose counts form is under half its size is written as
``{"values": [[v, ...], ...], "counts": [[n, ...], ...]}``: one sorted list of distinct values and one of their counts
per process (``samples_per_repeat`` cuts the processes; none: one). Reading it back gives every sample again, each
process's in ascending order, so every statistic a reader takes (percentiles, max, mean, the bootstrap of the median
in bench.compare, a --repeat merge) is the same as from the list as measured; only the order of the calls within a
process is not kept, and no reader uses it. Short lists stay plain lists.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

PACK_MIN = 2000  # samples: shorter lists are written as they are
MAX_SAMPLES = 50_000_000  # what a packed list may expand to (a bench.run row takes at most a few hundred thousand)


def pack(values: Sequence[float], sizes: Sequence[int] | None = None) -> list[float] | dict[str, list[list[Any]]]:
    """``values`` as results.json stores them: the list itself, or the counts form when it is under half the size.
    ``sizes``: samples per process (samples_per_repeat); ignored unless they add up to the samples."""
    values = list(values)
    if len(values) <= PACK_MIN:
        return values
    cuts = list(sizes) if sizes and sum(sizes) == len(values) else [len(values)]
    out: dict[str, list[list[Any]]] = {"values": [], "counts": []}
    start = 0
    for n in cuts:
        counts = sorted(Counter(values[start:start + n]).items())
        out["values"].append([v for v, _ in counts])
        out["counts"].append([c for _, c in counts])
        start += n
    stored = sum(2 * len(v) for v in out["values"])
    return out if 2 * stored < len(values) else values


def unpack(data: Any, where: str) -> list[Any]:
    """The samples of a stored raw-sample list (a plain list as it is); ValueError naming ``where`` when a counts
    form is malformed. The values themselves are checked by the caller, like a plain list's."""
    if not isinstance(data, dict):
        return data
    if set(data) != {"values", "counts"} or not isinstance(data["values"], list) or \
            not isinstance(data["counts"], list) or len(data["values"]) != len(data["counts"]):
        raise ValueError(f"{where} must be a list of numbers or {{\"values\": [...], \"counts\": [...]}} per process")
    total = 0
    for i, (vals, counts) in enumerate(zip(data["values"], data["counts"])):
        if not isinstance(vals, list) or not isinstance(counts, list) or len(vals) != len(counts):
            raise ValueError(f"{where}: process {i} needs as many counts as values")
        for n in counts:
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise ValueError(f"{where}: process {i}'s counts must be whole numbers >= 1, not {n!r}"[:200])
        total += sum(counts)
        if total > MAX_SAMPLES:
            raise ValueError(f"{where} expands to more than {MAX_SAMPLES:,} samples")
    out: list[Any] = []
    for vals, counts in zip(data["values"], data["counts"]):
        for v, n in zip(vals, counts):
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"{where}: a value must be finite, not {v!r}")
            out.extend([v] * n)
    return out

