"""Compare two benchmark runs: ``python -m bench.compare A.json B.json [--threshold PCT] [--fail-on-regression PCT]
[--normalize] [--noise-profile PATH] [--allow-inconclusive] [--format text|md|json]``.

The rule (bench.analysis.verdicts): rows matched on ``Record.key()``, B vs A as the ratio of the runs' process
medians with a t interval over processes (Welch's, or pooled with this machine's noise profile for a row measured in
one process), Holm's rule over the rows, every row's MDE and processes needed, and the machine check from both runs'
calibration probes. This module loads the two files, decides, and renders: ``text`` for a terminal (the default),
``md`` for a pull-request comment, ``json`` for CI (every row's medians, ratio, intervals, MDE and verdict, the
machine check, the profile and the exit code). The gate's FAIL lines go to stderr and the exit code is the same in
every format: 1 for a regression beyond --fail-on-regression or a row now failing, 3 when a row is inconclusive, has
no verdict or is withheld (unless --allow-inconclusive), 2 on bad input, else 0.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tabulate import tabulate

from bench.analysis.noise import Priors, priors_for
from bench.analysis.verdicts import (
    DECISION_RULE,
    DEFAULT_THRESHOLD_PCT,
    DETECT_FACTOR,
    VERDICTS,
    Change,
    compare_records,
    fmt_ratio,
    judge,
    machine_changed,
    machine_drift,
    machine_state,
    raw_samples,
    slowdown_ci,
    verdict,
)
from bench.cli import OneLineParser
from bench.measure.stats import MAX_PROCESSES
from bench.profile.explain import explain_text
from bench.records import InferRecord, Record, RunEnv
from bench.report.load import load_results

__all__ = ["Change", "Comparison", "compare_records", "fmt_ratio", "judge", "machine_drift", "main", "raw_samples",
           "slowdown_ci", "verdict"]

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


@dataclass
class Comparison:
    """Everything one comparison decided, for any of its renderings (bench.compare_format)."""

    path_a: str
    path_b: str
    env_a: RunEnv
    env_b: RunEnv
    threshold: float  # a fraction
    priors: Priors
    gate_pct: float | None  # --fail-on-regression
    drift: dict[str, Any] | None
    normalized: bool
    withheld: bool
    result: dict[str, Any]
    allow_inconclusive: bool = False

    def regressions(self) -> list[Change]:
        return [] if self.withheld else [c for c in self.result["changes"] if c.verdict == "regression"]

    def gate_failed(self) -> bool:
        return self.gate_pct is not None and bool(self.regressions())

    def unsettled(self) -> list[Change]:
        """Rows the gate cannot pass on: withheld, without a verdict, or inconclusive."""
        return [c for c in self.result["changes"] if shown_verdict(c, self.withheld) in UNSETTLED]

    def exit_code(self) -> int:
        if self.gate_failed() or self.result["now_failing"]:
            return 1
        return EXIT_UNSETTLED if self.unsettled() and not self.allow_inconclusive else 0


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m bench.compare", description="Compare two results.json files (B against A).",
                epilog=DECISION_RULE + " Exit status: 1 when a row that was ok in A fails in B, or when "
                "--fail-on-regression is given and a row is a regression beyond it; 3 when a row is inconclusive, "
                "has no verdict or is withheld (unless --allow-inconclusive); 2 on bad input; else 0.")
    p.add_argument("a", metavar="A.json", help="the baseline run")
    p.add_argument("b", metavar="B.json", help="the run to judge")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD_PCT, metavar="PCT",
                   help=f"T for the verdicts when --fail-on-regression is not given (default {DEFAULT_THRESHOLD_PCT:g})")
    p.add_argument("--fail-on-regression", type=float, metavar="PCT",
                   help="T = PCT, and exit 1 when any row is a regression beyond it")
    p.add_argument("--normalize", action="store_true",
                   help="divide every ratio by the machine calibration ratio instead of withholding verdicts when "
                        "the machines differ")
    p.add_argument("--noise-profile", metavar="PATH",
                   help="the noise profile (a file, or a results folder holding noise_profile.json) that judges rows "
                        "measured in one process (default: this machine's in the user cache, made by bench.run "
                        "--repeat 5)")
    p.add_argument("--allow-inconclusive", action="store_true",
                   help="exit 0 rather than 3 when rows are inconclusive, have no verdict or are withheld")
    p.add_argument("--format", choices=("text", "md", "json"), default="text",
                   help="text (default), md (a table for a pull-request comment) or json (every verdict, for CI)")
    p.add_argument("--explain", nargs="?", const="", metavar="ROW",
                   help="op by op, from both runs' profiles (bench.run --profile): why each flagged row changed, or "
                        "the rows whose key matches ROW (e.g. lenet.infer.eager.b1.fp32; wildcards allowed)")
    return p


def _pct(args: argparse.Namespace) -> float:
    """T as a fraction; ValueError on a negative or non-finite percentage."""
    pct = args.fail_on_regression if args.fail_on_regression is not None else args.threshold
    flag = "--fail-on-regression" if args.fail_on_regression is not None else "--threshold"
    if not (math.isfinite(pct) and pct >= 0):
        raise ValueError(f"{flag} must be a percentage >= 0, not {pct:g}")
    return pct / 100.0


def compare_files(args: argparse.Namespace) -> Comparison:
    """The comparison the command line asks for; ValueError (one line) on bad input."""
    threshold = _pct(args)
    env_a, rec_a = load_results(args.a)
    env_b, rec_b = load_results(args.b)
    priors = priors_for(env_a, env_b, args.noise_profile)
    drift = machine_drift(env_a, env_b, priors)
    changed = machine_changed(drift, threshold)
    normalize = changed and args.normalize
    result = compare_records(rec_a, rec_b, threshold, drift["interval"] if normalize else None, priors)
    return Comparison(args.a, args.b, env_a, env_b, threshold, priors, args.fail_on_regression, drift,
                      normalize, changed and not normalize, result, args.allow_inconclusive)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        comparison = compare_files(args)
        explained = "" if args.explain is None else explain_text(comparison, args.explain)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(RENDERERS[args.format](comparison), end="")
    print(explained, end="", file=sys.stderr if args.format == "json" else sys.stdout)  # json: stdout stays JSON
    print_gate(comparison)
    return comparison.exit_code()


JSON_FORMAT = 2  # the layout version of --format json (2: no floor; mde, processes_needed, p, family, noise)
EXIT_UNSETTLED = 3
UNSETTLED = ("inconclusive", "no verdict", "withheld")
HEADERS = ["model", "phase", "row", "procs A/B", "n A/B", "B vs A [95% CI]", "within-process [95% CI]",
           "spread A/B", "MDE", "verdict"]


def _label(rec: Record) -> list[str]:
    return [rec.model, rec.phase, rec.describe()]


def _name(rec: Record) -> str:
    return " ".join(x for x in _label(rec) if x)


def describe_env(tag: str, path: str, env: RunEnv) -> str:
    repeat = f" | {env.repeat} processes" if env.repeat > 1 else ""
    return (f"{tag}: {path} | {env.device_name or '?'} ({env.device or '?'}) | torch {env.torch or '?'} | "
            f"threads {env.threads if env.threads is not None else '?'} | commit {env.git_commit or '?'} | "
            f"{env.timestamp or '?'}{repeat}{' | QUICK' if env.quick else ''}{'' if env.complete else ' | INCOMPLETE'}")


def _probe(name: str, r: tuple[float, float, float]) -> str:
    if math.isnan(r[1]):
        return f"{name} {r[0]:.2f}x (one process per run, not in the noise profile)"
    return f"{name} {fmt_ratio(*r)}"


def machine_line(c: Comparison) -> str:
    """One line on the machines: by how much B's differs from A's, with the interval of its probes' own between-run
    spread, and whether that lies beyond the threshold."""
    if c.drift is None:
        return "machine: no calibration probe in both runs: a machine change cannot be told from a code change"
    probes = ", ".join(_probe(name, r) for name, r in c.drift["probes"].items())
    if c.drift["interval"] is None:
        return (f"machine: B vs A calibration {c.drift['ratio']:.2f}x ({probes}): not judged, its probes have no "
                f"between-run spread (one process per run; make a noise profile: {c.priors.command})")
    return (f"machine: B vs A calibration {fmt_ratio(c.drift['ratio'], c.drift['lo'], c.drift['hi'])} ({probes}; "
            f"t interval over the probes' processes): {machine_state(c.drift, c.threshold)} at T = "
            f"{c.threshold * 100:g}%")


def noise_line(c: Comparison) -> str:
    pooled = sum(x.method == "noise profile" for x in c.result["changes"])
    return (f"noise: {c.priors.describe()}; {pooled} rows measured in one process in either run are judged with it "
            f"(marked +P); rows measured in >= 2 processes in both runs by Welch's interval over their own processes")


def family_line(c: Comparison) -> str:
    m = sum(x.interval is not None for x in c.result["changes"])
    return (f"family: Holm's rule over the {m} rows judged (family-wise error 5%); MDE: the smallest change each row "
            f"would flag with 80% power at that level; 'processes' = per side, to detect "
            f"{1 + DETECT_FACTOR * c.threshold:.4g}x")


def shown_verdict(change: Change, withheld: bool) -> str:
    return "withheld" if withheld and change.slowdown is not None else change.verdict


def verdict_text(change: Change, withheld: bool, threshold: float) -> str:
    """The verdict, and for a row the gate cannot pass on, what would settle it."""
    shown = shown_verdict(change, withheld)
    if shown == "no verdict" and change.procs_a * change.procs_b == 1 and change.slowdown is not None:
        return "no verdict: one process, no noise profile for this row"
    if shown == "no verdict":
        return "no verdict: one search per run, no between-run spread"
    if shown != "inconclusive" or change.mde is None:
        return shown
    need = change.processes_needed
    target = f"{1 + DETECT_FACTOR * threshold:.4g}x"
    then = (f"--repeat {need} on both sides would detect {target}" if need
            else f"detecting {target} would take over {MAX_PROCESSES} processes a side" if threshold > 0
            else "at T = 0 no number of processes detects a change of T")
    return f"inconclusive: this data detects >= {change.mde:.2f}x; {then}"


def _spread(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.0f}%"


def table_rows(c: Comparison) -> list[list[str]]:
    rows = []
    for x in c.result["changes"]:
        if x.slowdown is None:
            ratio, within = "no ratio (too few or zero samples)", "-"
        elif x.lo is None:
            ratio, within = fmt_ratio(x.slowdown, x.slowdown, x.slowdown).split(" [")[0], "-"
            if x.within is not None:
                within = fmt_ratio(x.within, x.within_lo, x.within_hi)
        else:
            ratio = fmt_ratio(x.slowdown, x.lo, x.hi) + (" +P" if x.method == "noise profile" else "")
            within = "-" if x.within is None else fmt_ratio(x.within, x.within_lo, x.within_hi)
        mde = "-" if x.mde is None else f"{x.mde:.2f}x"
        rows.append([*_label(x.record), f"{x.procs_a}/{x.procs_b}", f"{x.n_a}/{x.n_b}", ratio, within,
                     f"{_spread(x.spread_a)}/{_spread(x.spread_b)}", mde, verdict_text(x, c.withheld, c.threshold)])
    return rows


def counts(c: Comparison) -> dict[str, int]:
    return {v: sum(x.verdict == v for x in c.result["changes"]) for v in VERDICTS}


def summary_lines(c: Comparison) -> list[str]:
    n = counts(c)
    first = ("machine changed: verdicts withheld (re-run on the same machine, or pass --normalize)" if c.withheld
             else f"{n['regression']} regressions, {n['improvement']} improvements, {n['no change']} no change, "
                  f"{n['inconclusive']} inconclusive, {n['no verdict']} no verdict")
    r = c.result
    lines = [first, f"{len(r['now_failing'])} now failing; {len(r['only_a'])} rows only in A, "
                    f"{len(r['only_b'])} only in B"]
    if n["no verdict"] and not c.priors.profiles:
        lines.append(f"to judge one-process rows, make this machine's noise profile once: {c.priors.command}")
    if c.unsettled():
        lines.append(f"{len(c.unsettled())} rows not settled (inconclusive, no verdict or withheld): "
                     + ("allowed by --allow-inconclusive" if c.allow_inconclusive else
                        f"they exit {EXIT_UNSETTLED} unless --allow-inconclusive"))
    return lines


def header_lines(c: Comparison) -> list[str]:
    lines = [describe_env("A", c.path_a, c.env_a), describe_env("B", c.path_b, c.env_b),
             f"rule: {DECISION_RULE} (T = {c.threshold * 100:g}%)", noise_line(c), family_line(c),
             *env_notes(c.env_a, c.env_b), machine_line(c)]
    if c.normalized:
        lines.append(f"normalized: every ratio below is divided by the machine's {c.drift['ratio']:.3f}")
    return lines


def failing_lines(c: Comparison) -> list[str]:
    return [f"now failing: {_name(rec)}: {rec.reason or 'no reason recorded'}" for rec in c.result["now_failing"]]


def render_text(c: Comparison) -> str:
    rows = table_rows(c)
    table = (tabulate(rows, headers=HEADERS, tablefmt="github", disable_numparse=True) if rows
             else "no row with raw samples is ok in both runs")
    return "\n".join([*header_lines(c), "", table, *failing_lines(c), "", *summary_lines(c)]) + "\n"


def render_md(c: Comparison) -> str:
    """A pull-request comment: the verdict first, the table, then how it was decided (in a details block)."""
    flagged = {id(x) for x in c.result["changes"] if shown_verdict(x, c.withheld) in ("regression", "improvement")}
    rows = [[*row[:-1], f"**{row[-1]}**" if id(x) in flagged else row[-1]]
            for x, row in zip(c.result["changes"], table_rows(c))]
    table = (tabulate(rows, headers=HEADERS, tablefmt="github", disable_numparse=True) if rows
             else "_no row with raw samples is ok in both runs_")
    how = "\n".join(f"- {line}" for line in header_lines(c))
    return "\n".join([f"### bench.compare: B vs A at T = {c.threshold * 100:g}%", "",
                      "; ".join(summary_lines(c)), "", *(f"- {line}" for line in failing_lines(c)), table, "",
                      "<details><summary>how this was decided</summary>", "", how, "", "</details>"]) + "\n"


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(f"{x:.6g}")


def row_json(x: Change, withheld: bool) -> dict[str, Any]:
    rec = x.record
    return {"key": [v for v in rec.key()], "model": rec.model, "phase": rec.phase, "row": rec.describe(),
            "unit": "ms per call" if isinstance(rec, InferRecord) else "samples/s",
            "lower_is_better": isinstance(rec, InferRecord), "median_a": _num(x.stat_a), "median_b": _num(x.stat_b),
            "slowdown": _num(x.slowdown), "lo": _num(x.lo), "hi": _num(x.hi), "within": _num(x.within),
            "within_lo": _num(x.within_lo), "within_hi": _num(x.within_hi), "method": x.method or None, "df": _num(x.interval and x.interval.df),
            "p": _num(x.p), "mde": _num(x.mde), "processes_needed": x.processes_needed, "processes_a": x.procs_a,
            "processes_b": x.procs_b, "n_a": x.n_a, "n_b": x.n_b, "spread_a": _num(x.spread_a),
            "spread_b": _num(x.spread_b), "rule_verdict": x.verdict, "verdict": shown_verdict(x, withheld)}


def _run_json(path: str, env: RunEnv) -> dict[str, Any]:
    return {"path": path, "device": env.device, "device_name": env.device_name, "torch": env.torch,
            "threads": env.threads, "git_commit": env.git_commit, "timestamp": env.timestamp, "repeat": env.repeat,
            "quick": env.quick, "complete": env.complete}


def machine_json(c: Comparison) -> dict[str, Any]:
    d = c.drift
    if d is None:
        return {"state": "unknown", "ratio": None, "lo": None, "hi": None, "probes": {}}
    return {"state": machine_state(d, c.threshold), "ratio": _num(d["ratio"]), "lo": _num(d["lo"]),
            "hi": _num(d["hi"]), "probes": {k: [_num(v) for v in r] for k, r in d["probes"].items()}}


def render_json(c: Comparison) -> str:
    r = c.result
    doc = {"format": JSON_FORMAT, "a": _run_json(c.path_a, c.env_a), "b": _run_json(c.path_b, c.env_b),
           "rule": DECISION_RULE, "threshold_pct": _num(c.threshold * 100), "gate_pct": c.gate_pct,
           "noise": {"profiles": [p.path for p in c.priors.profiles], "make": c.priors.command},
           "family": {"rule": "holm", "alpha": 0.05, "rows": sum(x.interval is not None for x in r["changes"])},
           "machine": machine_json(c), "allow_inconclusive": c.allow_inconclusive,
           "normalized": c.normalized, "withheld": c.withheld, "notes": env_notes(c.env_a, c.env_b),
           "rows": [row_json(x, c.withheld) for x in r["changes"]], "counts": counts(c),
           "now_failing": [{"key": list(rec.key()), "row": _name(rec), "reason": rec.reason}
                           for rec in r["now_failing"]],
           "only_a": [list(rec.key()) for rec in r["only_a"]], "only_b": [list(rec.key()) for rec in r["only_b"]],
           "exit_code": c.exit_code()}
    return json.dumps(doc, indent=1) + "\n"


RENDERERS: dict[str, Callable[[Comparison], str]] = {"text": render_text, "md": render_md, "json": render_json}


def print_gate(c: Comparison) -> None:
    """The FAIL lines on stderr (every format): the worst regression beyond the gate, and rows now failing."""
    regressions = c.regressions()
    if c.gate_failed():
        worst = max(regressions, key=lambda x: x.lo)
        print(f"FAIL: {len(regressions)} regressions beyond {c.gate_pct:g}% (worst: {_name(worst.record)} "
              f"{fmt_ratio(worst.slowdown, worst.lo, worst.hi)})", file=sys.stderr)
    if c.result["now_failing"]:
        print(f"FAIL: {len(c.result['now_failing'])} rows ok in A now fail in B", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
