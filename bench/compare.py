"""Compare two benchmark runs: ``python -m bench.compare A.json B.json [--fail-on-regression PCT]``.

Records are matched on what was measured (model, phase, loader/backend, batch size, precision, channels_last,
compile, processes). A change counts as a regression or an improvement only when it is larger than the noise the runs
themselves report: |change| > max(2 x relative IQR of A, 2 x relative IQR of B, 2%). Anything smaller is "within noise".
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from tabulate import tabulate

from bench.report import load_results

DEFAULT_METRICS = ("samples_per_s", "p50_ms", "p99_ms")
MIN_NOISE_PCT = 2.0
KEY_FIELDS = ("model", "phase", "loader", "backend", "batch_size", "precision", "channels_last", "compile",
              "processes")


def higher_is_better(metric: str) -> bool:
    return not metric.endswith("_ms")


def record_key(rec: dict[str, Any]) -> tuple:
    # A missing precision / channels_last / compile means the default variant: fp32, contiguous, eager.
    defaults = {"precision": "fp32", "channels_last": False, "compile": None}
    return tuple(rec.get(k) if rec.get(k) is not None else defaults.get(k) for k in KEY_FIELDS)


def relative_noise(rec: dict[str, Any], metric: str) -> float | None:
    """The record's own spread as a fraction of the metric: its IQR over its median."""
    if metric == "samples_per_s" and rec.get("samples_per_s_iqr") is not None and rec.get("samples_per_s"):
        return abs(rec["samples_per_s_iqr"] / rec["samples_per_s"])
    # Latency records carry the IQR of per-call latency; throughput derived from it has the same relative spread.
    # For p99 this understates the tail's own noise: a p99 verdict is the least trustworthy one.
    if rec.get("iqr_ms") is not None and rec.get("p50_ms"):
        return abs(rec["iqr_ms"] / rec["p50_ms"])
    return None


def verdict(metric: str, a: float, b: float, noise_a: float | None, noise_b: float | None
            ) -> tuple[float, float, str]:
    """(change %, noise threshold %, verdict) for B against A."""
    change = (b - a) / a * 100.0
    threshold = max(2 * 100 * (noise_a or 0.0), 2 * 100 * (noise_b or 0.0), MIN_NOISE_PCT)
    if abs(change) <= threshold:
        return change, threshold, "within noise"
    better = change > 0 if higher_is_better(metric) else change < 0
    return change, threshold, "improvement" if better else "regression"


def worse_by_pct(metric: str, change: float) -> float:
    """How much worse B is than A, in percent (positive = worse), whichever direction is better."""
    return -change if higher_is_better(metric) else change


def _label(key: tuple) -> list[Any]:
    k = dict(zip(KEY_FIELDS, key))
    what = k["loader"] or k["backend"] or ""
    extras = [x for x in (k["precision"] if k["precision"] != "fp32" else "", "channels_last" if k["channels_last"]
                          else "", f"compile={k['compile']}" if k["compile"] else "",
                          f"procs={k['processes']}" if k["processes"] is not None else "") if x]
    return [k["model"], k["phase"], " ".join([what, *extras]).strip(), "" if k["batch_size"] is None else k["batch_size"]]


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def compare(a_records: list[dict], b_records: list[dict], metrics: list[str]) -> dict[str, Any]:
    """Rows per metric, the regressions among them, and what could not be matched."""
    index_a = {record_key(r): r for r in a_records if r.get("phase") != "model"}
    index_b = {record_key(r): r for r in b_records if r.get("phase") != "model"}
    tables: dict[str, list[list[Any]]] = {}
    regressions: list[tuple[str, tuple, float]] = []
    counts = {"regression": 0, "improvement": 0, "within noise": 0}
    for metric in metrics:
        rows = []
        for key, ra in index_a.items():
            rb = index_b.get(key)
            if rb is None or ra.get("status", "ok") != "ok" or rb.get("status", "ok") != "ok":
                continue
            a, b = ra.get(metric), rb.get(metric)
            if not _is_num(a) or not _is_num(b) or a == 0:
                continue
            change, threshold, word = verdict(metric, a, b, relative_noise(ra, metric), relative_noise(rb, metric))
            counts[word] += 1
            if word == "regression":
                regressions.append((metric, key, worse_by_pct(metric, change)))
            rows.append([*_label(key), _fmt(a), _fmt(b), f"{change:+.1f}%", f"±{threshold:.1f}%", word])
        if rows:
            tables[metric] = rows
    newly_failing = [key for key, ra in index_a.items() if ra.get("status", "ok") == "ok"
                     and key in index_b and index_b[key].get("status", "ok") == "failed"]
    return {"tables": tables, "regressions": regressions, "counts": counts, "newly_failing": newly_failing,
            "only_a": [k for k in index_a if k not in index_b], "only_b": [k for k in index_b if k not in index_a]}


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        print(f"error: {message} (see python -m bench.compare --help)", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m bench.compare", description="Compare two results.json files (B against A).")
    p.add_argument("a", metavar="A.json", help="the baseline run")
    p.add_argument("b", metavar="B.json", help="the run to judge")
    p.add_argument("--metric", action="append", metavar="NAME",
                   help="metric to compare, repeatable or comma-separated: samples_per_s or any *_ms field "
                        f"(default: {', '.join(DEFAULT_METRICS)}; 'all' for every *_ms field too)")
    p.add_argument("--fail-on-regression", type=float, metavar="PCT",
                   help="exit 1 if any regression is worse than PCT%% (or a measurement that was ok now fails)")
    return p


def _metrics(given: list[str] | None, records: list[dict]) -> list[str]:
    names = [m.strip() for g in (given or []) for m in g.split(",") if m.strip()] or list(DEFAULT_METRICS)
    if "all" in names:
        found = {k for r in records for k in r if k.endswith("_ms") and k != "iqr_ms"}
        names = ["samples_per_s", *sorted(found)]
    for m in names:
        if m != "samples_per_s" and not m.endswith("_ms"):
            raise ValueError(f"--metric {m!r}: only samples_per_s and *_ms fields have a better direction")
    return list(dict.fromkeys(names))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.fail_on_regression is not None and not args.fail_on_regression >= 0:
            raise ValueError(f"--fail-on-regression must be a percentage >= 0, not {args.fail_on_regression}")
        env_a, rec_a = load_results(args.a)
        env_b, rec_b = load_results(args.b)
        metrics = _metrics(args.metric, rec_a + rec_b)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    for tag, env, path in (("A", env_a, args.a), ("B", env_b, args.b)):
        print(f"{tag}: {path} | {env.get('device_name', '?')} ({env.get('device', '?')}) | commit "
              f"{env.get('git_commit') or '?'} | {env.get('timestamp', '?')}{' | QUICK' if env.get('quick') else ''}")
    if env_a.get("device_name") != env_b.get("device_name") or env_a.get("device") != env_b.get("device"):
        print("note: the runs were made on different devices; changes reflect the hardware, not only the code")
    if bool(env_a.get("quick")) != bool(env_b.get("quick")):
        print("note: one run is --quick and the other is not; their settings differ")
    elif env_a.get("quick"):
        print("note: both runs are --quick: short timings whose spread understates run-to-run noise")

    result = compare(rec_a, rec_b, metrics)
    for metric, rows in result["tables"].items():
        direction = "higher is better" if higher_is_better(metric) else "lower is better"
        print(f"\n## {metric} ({direction})\n")
        print(tabulate(rows, headers=["model", "phase", "what", "batch", "A", "B", "change", "noise", "verdict"],
                       tablefmt="github", disable_numparse=True))
    if not result["tables"]:
        print("\nno measurement appears in both runs with these metrics")
    for key in result["newly_failing"]:
        print(f"now failing: {' '.join(str(x) for x in _label(key) if x != '')}")
    c = result["counts"]
    print(f"\n{c['regression']} regressions, {c['improvement']} improvements, {c['within noise']} within noise; "
          f"{len(result['only_a'])} measurements only in A, {len(result['only_b'])} only in B")

    if args.fail_on_regression is not None:
        worst = [r for r in result["regressions"] if r[2] > args.fail_on_regression]
        if worst or result["newly_failing"]:
            metric, key, pct = max(worst, key=lambda r: r[2]) if worst else (None, None, 0.0)
            if worst:
                print(f"FAIL: {len(worst)} regressions worse than {args.fail_on_regression:g}% (worst: "
                      f"{' '.join(str(x) for x in _label(key) if x != '')} {metric} {pct:.1f}% worse)",
                      file=sys.stderr)
            else:
                print(f"FAIL: {len(result['newly_failing'])} measurements now fail", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
