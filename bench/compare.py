"""Compare two benchmark runs: ``python -m bench.compare A.json B.json [--threshold PCT] [--fail-on-regression PCT]
[--normalize]``.

Rows are matched on what was measured (``Record.key()``). For every pair this compares the raw samples each run kept
(per-call latencies for inference, per-query latencies for the serve phase's LoadGen rows, per-window samples/s for
training and scaling): B vs A is the ratio of their medians, with a seeded bootstrap interval, printed as e.g.
``1.27x slower [1.24, 1.30]``. A Server row compares its max rate instead (A's over B's), the interval from the two
searches' brackets. Both runs' machine
calibration probes are compared the same way, so a slower machine is not mistaken for slower code.
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from typing import Any

from tabulate import tabulate

from bench.measure.stats import median_ratio_ci
from bench.records import InferRecord, Record, RunEnv, ScaleRecord, ServeRecord, TrainRecord
from bench.report.load import load_results, probe_samples

DEFAULT_THRESHOLD_PCT = 5.0
CONF = 0.95
MIN_SAMPLES = 3  # fewer raw samples on either side: the interval means nothing, the row is inconclusive
VERDICTS = ("regression", "improvement", "no change", "inconclusive")
DECISION_RULE = (
    "B vs A = median(B) / median(A) of the raw samples (per-call latency; per-window samples/s), as a slowdown or "
    "speedup factor with its 95% bootstrap interval. Threshold T = --fail-on-regression PCT when given, else "
    "--threshold (default 5%). A row is a regression (or improvement) only when the WHOLE interval lies beyond "
    "T slower (faster); 'no change' when the whole interval lies within +-T; 'inconclusive' when it straddles T. "
    "Machine drift: the runs' calibration probes are compared by the same rule; when they differ beyond T, verdicts "
    "are withheld, or with --normalize every ratio is divided by the machine's ratio.")


@dataclass
class Change:
    """One matched row: B's time over A's time (> 1 slower, < 1 faster) and its interval."""

    record: Record
    slowdown: float | None
    lo: float | None
    hi: float | None
    n_a: int
    n_b: int
    verdict: str


def raw_samples(rec: Record) -> tuple[list[float], bool] | None:
    """(samples, lower_is_better) of a row: per-call (per-query) latency in ms, or per-window samples/s; None for
    other tables."""
    if isinstance(rec, ServeRecord) and rec.mode == "AccuracyOnly":
        return None  # an accuracy pass: no latency to compare
    if isinstance(rec, (InferRecord, ServeRecord)):
        return list(rec.latencies_ms or []), True
    if isinstance(rec, (TrainRecord, ScaleRecord)):
        return list(rec.window_rates or []), False
    return None


def slowdown_ci(a: list[float], b: list[float], lower_is_better: bool) -> tuple[float, float, float]:
    """(B time / A time, lo, hi): the ratio of medians oriented so > 1 always means B is slower."""
    ratio, lo, hi = median_ratio_ci(a, b, conf=CONF, seed=0)
    if lower_is_better:
        return ratio, lo, hi
    return _inv(ratio), _inv(hi), _inv(lo)


def verdict(lo: float, hi: float, threshold: float) -> str:
    """The decision rule: flag only when the whole interval lies beyond the threshold (a fraction, e.g. 0.05)."""
    up, down = 1 + threshold, 1 / (1 + threshold)
    if lo > up:
        return "regression"
    if hi < down:
        return "improvement"
    if lo >= down and hi <= up:
        return "no change"
    return "inconclusive"


def fmt_ratio(s: float, lo: float, hi: float) -> str:
    """``1.27x slower [1.24, 1.30]`` or ``1.10x faster [1.05, 1.15]`` (the interval in the same direction)."""
    if s >= 1:
        return f"{s:.2f}x slower [{lo:.2f}, {hi:.2f}]"
    return f"{_inv(s):.2f}x faster [{_inv(hi):.2f}, {_inv(lo):.2f}]"


def _inv(x: float) -> float:
    return 1 / x if x > 0 else math.inf


def machine_drift(env_a: RunEnv, env_b: RunEnv) -> dict[str, Any] | None:
    """B's machine time over A's from the calibration probes both runs share: the geometric mean of the probes'
    ratios and of their interval ends (conservative: as if the probes' errors were fully correlated)."""
    pa, pb = probe_samples(env_a.calibration), probe_samples(env_b.calibration)
    names = sorted(set(pa) & set(pb))
    if not names:
        return None
    try:
        probes = {name: median_ratio_ci(pa[name], pb[name], conf=CONF, seed=0) for name in names}
    except (TypeError, ValueError):  # junk in a calibration block: treat it as missing
        return None

    def geo(i: int) -> float:
        return math.exp(sum(math.log(p[i]) for p in probes.values()) / len(probes))

    return {"ratio": geo(0), "lo": geo(1), "hi": geo(2), "probes": probes}


def rate_bracket(rec: ServeRecord) -> tuple[float, float] | None:
    """A Server row's max rate as the interval its search left: [highest passing, lowest failing above it] (the
    passing rate twice when no probe above it failed); None without an answer."""
    if rec.max_rate_qps is None or rec.max_rate_qps <= 0:
        return None
    above = [p["target_qps"] for p in rec.probes if not p.get("met_bound") and p["target_qps"] > rec.max_rate_qps]
    return rec.max_rate_qps, min(above) if above else rec.max_rate_qps


def judge_rates(ra: ServeRecord, rb: ServeRecord, threshold: float,
                machine: tuple[float, float, float] | None) -> Change:
    """Server rows: B's time over A's time is A's max rate over B's, its interval from the two search brackets
    (each capacity lies in its bracket), so a search's resolution is never read as a change."""
    a, b = rate_bracket(ra), rate_bracket(rb)
    if a is None or b is None:
        return Change(rb, None, None, None, len(ra.probes), len(rb.probes), "inconclusive")
    s, lo, hi = a[0] / b[0], a[0] / b[1], a[1] / b[0]
    if machine is not None:
        s, lo, hi = s / machine[0], lo / machine[2], hi / machine[1]
    return Change(rb, s, lo, hi, len(ra.probes), len(rb.probes), verdict(lo, hi, threshold))


def judge(ra: Record, rb: Record, threshold: float, machine: tuple[float, float, float] | None) -> Change | None:
    """The change from row ``ra`` to row ``rb`` (both ok), or None for a table without raw samples.

    ``machine`` = (ratio, lo, hi) divides the ratio (--normalize): lo by the machine's hi, hi by its lo, so the
    machine's own uncertainty widens the interval rather than vanishing.
    """
    if isinstance(ra, ServeRecord) and isinstance(rb, ServeRecord) and ra.scenario == "Server":
        return judge_rates(ra, rb, threshold, machine)
    pair = raw_samples(ra), raw_samples(rb)
    if pair[0] is None or pair[1] is None:
        return None
    (sa, lower_better), (sb, _) = pair
    try:
        if min(len(sa), len(sb)) < MIN_SAMPLES:
            raise ValueError("too few samples")
        s, lo, hi = slowdown_ci(sa, sb, lower_better)
    except (TypeError, ValueError):  # too few samples, a median of zero, junk values: no ratio to judge
        return Change(rb, None, None, None, len(sa), len(sb), "inconclusive")
    if machine is not None:
        s, lo, hi = s / machine[0], lo / machine[2], hi / machine[1]
    return Change(rb, s, lo, hi, len(sa), len(sb), verdict(lo, hi, threshold))


def compare_records(rec_a: list[Record], rec_b: list[Record], threshold: float,
                    machine: tuple[float, float, float] | None = None) -> dict[str, Any]:
    """Changes of every row ok in both runs, the rows ok in A that fail in B, and what appears in one run only."""
    index_a = {r.key(): r for r in rec_a}
    index_b = {r.key(): r for r in rec_b}
    changes = []
    for key, ra in index_a.items():
        rb = index_b.get(key)
        if rb is not None and ra.ok and rb.ok:
            change = judge(ra, rb, threshold, machine)
            if change is not None:
                changes.append(change)
    now_failing = [index_b[k] for k, ra in index_a.items()
                   if ra.ok and k in index_b and index_b[k].status == "failed"]
    return {"changes": changes, "now_failing": now_failing,
            "only_a": [r for k, r in index_a.items() if k not in index_b],
            "only_b": [r for k, r in index_b.items() if k not in index_a]}


def env_notes(env_a: RunEnv, env_b: RunEnv) -> list[str]:
    """What differs between the runs besides the code, each a note line."""
    notes = []
    for name, what in (("device", "device"), ("device_name", "device model"), ("threads", "torch threads"),
                       ("torch", "torch version")):
        va, vb = getattr(env_a, name), getattr(env_b, name)
        if va != vb:
            notes.append(f"note: {what} differs: A {va!r}, B {vb!r}; changes reflect that too, not only the code")
    if env_a.quick != env_b.quick:
        notes.append("note: one run is --quick and the other is not: their sample counts and settings differ")
    elif env_a.quick:
        notes.append("note: both runs are --quick: few samples, short windows; expect inconclusive rows")
    return notes


def describe_env(tag: str, path: str, env: RunEnv) -> str:
    return (f"{tag}: {path} | {env.device_name or '?'} ({env.device or '?'}) | torch {env.torch or '?'} | "
            f"threads {env.threads if env.threads is not None else '?'} | commit {env.git_commit or '?'} | "
            f"{env.timestamp or '?'}{' | QUICK' if env.quick else ''}{'' if env.complete else ' | INCOMPLETE'}")


def report_machine(drift: dict[str, Any] | None, threshold: float) -> str:
    """One line on the machines, and whether they differ beyond the threshold ('changed'), are the same within it
    ('same'), or cannot be told apart ('inconclusive' / 'unknown')."""
    if drift is None:
        return "machine: no calibration probe in both runs: a machine change cannot be told from a code change"
    probes = ", ".join(f"{name} {fmt_ratio(*r)}" for name, r in drift["probes"].items())
    word = verdict(drift["lo"], drift["hi"], threshold)
    state = {"regression": "changed (slower)", "improvement": "changed (faster)", "no change": "same",
             "inconclusive": "inconclusive"}[word]
    return (f"machine: B vs A calibration {fmt_ratio(drift['ratio'], drift['lo'], drift['hi'])} ({probes}): "
            f"{state} at T = {threshold * 100:g}%")


def machine_changed(drift: dict[str, Any] | None, threshold: float) -> bool:
    return drift is not None and verdict(drift["lo"], drift["hi"], threshold) in ("regression", "improvement")


def _label(rec: Record) -> list[str]:
    return [rec.model, rec.phase, rec.describe()]


def print_table(changes: list[Change], withheld: bool) -> None:
    rows = []
    for c in changes:
        ratio = "no ratio (too few or zero samples)" if c.slowdown is None else fmt_ratio(c.slowdown, c.lo, c.hi)
        word = "withheld" if withheld and c.slowdown is not None else c.verdict
        rows.append([*_label(c.record), f"{c.n_a}/{c.n_b}", ratio, word])
    if rows:
        print(tabulate(rows, headers=["model", "phase", "row", "n A/B", "B vs A [95% CI]", "verdict"],
                       tablefmt="github", disable_numparse=True))
    else:
        print("no row with raw samples is ok in both runs")


def summarize(result: dict[str, Any], withheld: bool) -> None:
    for rec in result["now_failing"]:
        print(f"now failing: {' '.join(x for x in _label(rec) if x)}: {rec.reason or 'no reason recorded'}")
    counts = {v: sum(c.verdict == v for c in result["changes"]) for v in VERDICTS}
    if withheld:
        print("\nmachine changed: verdicts withheld (re-run on the same machine, or pass --normalize)")
    else:
        print(f"\n{counts['regression']} regressions, {counts['improvement']} improvements, "
              f"{counts['no change']} no change, {counts['inconclusive']} inconclusive")
    print(f"{len(result['now_failing'])} now failing; {len(result['only_a'])} rows only in A, "
          f"{len(result['only_b'])} only in B")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        print(f"error: {message} (see python -m bench.compare --help)", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m bench.compare", description="Compare two results.json files (B against A).",
                epilog=DECISION_RULE + " Exit status: 1 when a row that was ok in A fails in B, or when "
                "--fail-on-regression is given and a row is a regression beyond it; 2 on bad input; else 0.")
    p.add_argument("a", metavar="A.json", help="the baseline run")
    p.add_argument("b", metavar="B.json", help="the run to judge")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD_PCT, metavar="PCT",
                   help=f"T for the verdicts when --fail-on-regression is not given (default {DEFAULT_THRESHOLD_PCT:g})")
    p.add_argument("--fail-on-regression", type=float, metavar="PCT",
                   help="T = PCT, and exit 1 when any row is a regression beyond it")
    p.add_argument("--normalize", action="store_true",
                   help="divide every ratio by the machine calibration ratio instead of withholding verdicts when "
                        "the machines differ")
    return p


def _threshold(args: argparse.Namespace) -> float:
    pct = args.fail_on_regression if args.fail_on_regression is not None else args.threshold
    flag = "--fail-on-regression" if args.fail_on_regression is not None else "--threshold"
    if not (math.isfinite(pct) and pct >= 0):
        raise ValueError(f"{flag} must be a percentage >= 0, not {pct:g}")
    return pct / 100.0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        threshold = _threshold(args)
        env_a, rec_a = load_results(args.a)
        env_b, rec_b = load_results(args.b)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(describe_env("A", args.a, env_a))
    print(describe_env("B", args.b, env_b))
    print(f"rule: {DECISION_RULE} (T = {threshold * 100:g}%)")
    for note in env_notes(env_a, env_b):
        print(note)
    drift = machine_drift(env_a, env_b)
    print(report_machine(drift, threshold))
    changed = machine_changed(drift, threshold)
    normalize = changed and args.normalize
    if normalize:
        print(f"normalized: every ratio below is divided by the machine's {drift['ratio']:.3f}")
    result = compare_records(rec_a, rec_b, threshold,
                             (drift["ratio"], drift["lo"], drift["hi"]) if normalize else None)
    withheld = changed and not normalize
    print()
    print_table(result["changes"], withheld)
    summarize(result, withheld)
    regressions = [c for c in result["changes"] if c.verdict == "regression"] if not withheld else []
    failed_gate = args.fail_on_regression is not None and bool(regressions)
    if failed_gate:
        worst = max(regressions, key=lambda c: c.lo)
        print(f"FAIL: {len(regressions)} regressions beyond {args.fail_on_regression:g}% (worst: "
              f"{' '.join(x for x in _label(worst.record) if x)} {fmt_ratio(worst.slowdown, worst.lo, worst.hi)})",
              file=sys.stderr)
    if result["now_failing"]:
        print(f"FAIL: {len(result['now_failing'])} rows ok in A now fail in B", file=sys.stderr)
    return 1 if failed_gate or result["now_failing"] else 0


if __name__ == "__main__":
    sys.exit(main())
