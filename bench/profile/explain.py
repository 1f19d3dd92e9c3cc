"""``python -m bench.compare A.json B.json --explain [ROW]``: a changed row explained op by op from both runs' profiles.

For each row compare flagged (a regression or an improvement), or the rows whose key matches ROW (a row key such as
``lenet.infer.eager.b1.fp32``, shell wildcards allowed), the two runs' profiles (OUT/<device>/profiles/<row>.json,
written by ``bench.run --profile``) are matched op by op on the op's name: an op in both grew or shrank, an op in B
only appeared (another kernel chosen, a fusion lost), an op in A only vanished. Each op's change is its self time per
profiled call in B minus in A; its share of the row's change divides that by the change of the row's timed p50
(B's p50 minus A's). The ops' changes together are what the profiles account for: profiled times carry the
profiler's overhead (each profile states it), so the shares are a guide to where the time moved, not an exact sum.
"""
from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field

from tabulate import tabulate

from bench.profile.record import PROFILES_DIR, ProfileRecord, load_profiles, row_key
from bench.records import InferRecord

SHOWN_OPS = 12
FLAGGED = ("regression", "improvement")


@dataclass
class OpChange:
    name: str
    op_type: str
    a_ms: float | None  # self ms per profiled call in A (None: not in A)
    b_ms: float | None
    delta_ms: float  # B - A per call
    share_of_change: float | None  # delta_ms / the row's p50 change (None: the row did not change)

    @property
    def kind(self) -> str:
        if self.a_ms is None:
            return "appeared"
        if self.b_ms is None:
            return "vanished"
        return "grew" if self.delta_ms > 0 else "shrank" if self.delta_ms < 0 else "same"


@dataclass
class Explanation:
    row: str
    a: ProfileRecord | None
    b: ProfileRecord | None
    changes: list[OpChange] = field(default_factory=list)  # largest |delta| first
    missing: str | None = None  # why there is no op-level answer

    @property
    def row_change_ms(self) -> float | None:
        if self.a is None or self.b is None or self.a.row_p50_ms is None or self.b.row_p50_ms is None:
            return None
        return self.b.row_p50_ms - self.a.row_p50_ms

    @property
    def profile_change_ms(self) -> float:
        return sum(c.delta_ms for c in self.changes)

    @property
    def accounted(self) -> float | None:
        change = self.row_change_ms
        return self.profile_change_ms / change if change else None


def per_call(p: ProfileRecord) -> dict[str, tuple[str, float]]:
    """name -> (op type, self ms per profiled call) over the primary activity."""
    calls = max(p.calls, 1)
    out: dict[str, tuple[str, float]] = {}
    for op in p.primary_ops():
        kind, ms = out.get(op.name, (op.op_type, 0.0))
        out[op.name] = (kind, ms + op.self_ms / calls)
    return out


def explain_row(key: str, a: ProfileRecord | None, b: ProfileRecord | None) -> Explanation:
    out = Explanation(key, a, b)
    for tag, p in (("A", a), ("B", b)):
        if p is None:
            out.missing = f"no profile of this row in {tag} (run it with --profile or --profile-rows {key})"
            return out
        if not p.ok:
            out.missing = f"{tag}'s profile is {p.status}: {p.reason}"
            return out
    ops_a, ops_b = per_call(a), per_call(b)
    change = out.row_change_ms
    for name in dict.fromkeys([*ops_a, *ops_b]):
        kind, a_ms = ops_a.get(name, (None, None))
        kind_b, b_ms = ops_b.get(name, (None, None))
        delta = (b_ms or 0.0) - (a_ms or 0.0)
        out.changes.append(OpChange(name, kind or kind_b or "", a_ms, b_ms, delta, delta / change if change else None))
    out.changes.sort(key=lambda c: -abs(c.delta_ms))
    return out


def profiles_near(results_path: str) -> dict[str, ProfileRecord]:
    return load_profiles(os.path.join(os.path.dirname(os.path.abspath(results_path)), PROFILES_DIR))


def rows_to_explain(changes: list, pattern: str, known: set[str]) -> list[str]:
    """The flagged inference rows (pattern ""), or the keys matching ``pattern``; ValueError when it matches none."""
    if not pattern:
        return [row_key(c.record.model, c.record.phase, c.record.backend, c.record.batch_size, c.record.precision)
                for c in changes if c.verdict in FLAGGED and isinstance(c.record, InferRecord)]
    rows = sorted(k for k in known if fnmatch.fnmatchcase(k, pattern))
    if not rows:
        example = f" (keys look like {min(known)})" if known else " (neither run has profiles: bench.run --profile)"
        raise ValueError(f"--explain {pattern}: no row of either run matches{example}")
    return rows


def explain_runs(path_a: str, path_b: str, changes: list, pattern: str) -> list[Explanation]:
    prof_a, prof_b = profiles_near(path_a), profiles_near(path_b)
    infer_keys = {row_key(c.record.model, c.record.phase, c.record.backend, c.record.batch_size, c.record.precision)
                  for c in changes if isinstance(c.record, InferRecord)}
    keys = rows_to_explain(changes, pattern, set(prof_a) | set(prof_b) | infer_keys)
    return [explain_row(k, prof_a.get(k), prof_b.get(k)) for k in keys]


def ms(x: float | None) -> str:
    return "" if x is None else f"{x:.4g}"


def render(explanations: list[Explanation], pattern: str) -> str:
    if not explanations:
        return "\nexplain: no inference row was flagged; name one with --explain ROW\n"
    out = []
    for e in explanations:
        out += ["", f"explain {e.row}:"]
        if e.missing:
            out.append(f"  {e.missing}")
            continue
        change, acc = e.row_change_ms, e.accounted
        out.append(f"  row p50 {e.a.row_p50_ms:.4g} -> {e.b.row_p50_ms:.4g} ms ({change:+.4g} ms); the ops' self time "
                   f"per call {e.profile_change_ms:+.4g} ms" + (f" = {100 * acc:.0f}% of the row's change" if acc
                                                                  is not None else ""))
        out.append(f"  profilers: A {e.a.profiler}, overhead {pct(e.a.overhead)}; B {e.b.profiler}, overhead "
                   f"{pct(e.b.overhead)} (profiled times include it)")
        rows = [[c.kind, c.name[:60], "" if c.op_type == c.name else c.op_type[:30], ms(c.a_ms), ms(c.b_ms), f"{c.delta_ms:+.4g}",
                 "" if c.share_of_change is None else f"{100 * c.share_of_change:+.0f}%"]
                for c in e.changes[:SHOWN_OPS]]
        table = tabulate(rows, ["change", "op", "type", "A ms/call", "B ms/call", "B-A ms", "of row change"],
                         tablefmt="simple", disable_numparse=True)
        out += ["  " + line for line in table.splitlines()]
        if len(e.changes) > SHOWN_OPS:
            out.append(f"  ({len(e.changes) - SHOWN_OPS} smaller changes not shown)")
    return "\n".join(out) + "\n"


def pct(x: float | None) -> str:
    return "?" if x is None else f"{100 * x:+.0f}%"


def explain_text(comparison, pattern: str) -> str:
    """What ``--explain`` prints after compare's table (``comparison``: bench.analysis.compare.Comparison)."""
    return render(explain_runs(comparison.path_a, comparison.path_b, comparison.result["changes"], pattern), pattern)
