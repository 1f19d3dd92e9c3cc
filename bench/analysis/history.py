"""History over commits: ``python -m bench.history results/cpu/results.json [--metric latency|throughput]
[--normalize] [--threshold PCT] [--out FILE.md] [--plots DIR]``.

Reads every committed version of that file from git (``git log`` then ``git show COMMIT:PATH``; nothing is checked
out), oldest first, strictly (bench.report.load); a version that does not load (an older schema, a broken file) is
listed as skipped with the reason. Per model it prints a trend table, a row per row key and a column per commit, and
draws one plot. A step between two consecutive versions of a row is judged by bench.compare's own rule on the raw
samples both kept: the t interval over the log process medians (Welch's, or pooled with this machine's noise profile
for rows measured in one process; no profile: no verdict), Holm's rule over the steps into one version, and its
machine check: when the runs' calibration probes differ beyond the threshold, the step is withheld, or with
``--normalize`` every figure and ratio is divided by the machine's ratio.
"""
from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
from dataclasses import dataclass, field

from bench.analysis.compare import DEFAULT_THRESHOLD_PCT, judge, machine_changed, machine_drift
from bench.analysis.matrix import METRICS, figure_of, model_section, sort_key
from bench.analysis.noise import Priors, load_profile, priors_for
from bench.analysis.verdicts import Change, family_verdicts
from bench.cli import OneLineParser
from bench.measure.stats import LogInterval
from bench.records import Record, RunEnv
from bench.report.load import first_line, parse_results
from bench.report.tables import num, pct

GIT_TIMEOUT_S = 120


@dataclass
class Version:
    """One commit's copy of the file: loaded (env, records) or skipped with the reason."""

    commit: str
    date: str
    subject: str
    env: RunEnv | None = None
    records: list[Record] = field(default_factory=list)
    skipped: str | None = None

    @property
    def label(self) -> str:
        return f"{self.commit[:7]} {self.date[:10]}"


@dataclass
class Point:
    value: float
    spread: float | None
    step: str | None = None  # bench.compare's verdict against the previous point, "withheld", or None (first)
    ratio: float | None = None  # time ratio against the previous point (> 1 slower), when judged


@dataclass
class Series:
    model: str
    phase: str
    label: str
    unit: str
    lower_is_better: bool
    points: list[Point | None] = field(default_factory=list)


def git(args: list[str], cwd: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=GIT_TIMEOUT_S,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ValueError(f"git {args[0]} failed: {first_line(exc)}") from None
    if done.returncode:
        raise ValueError(f"git {args[0]} failed: {first_line(RuntimeError(done.stderr)) or done.returncode}")
    return done.stdout


def versions(path: str) -> list[Version]:
    """Every committed version of ``path``, oldest first; ValueError when it is not in a git repository's history."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"{path}: no such folder")
    root = git(["rev-parse", "--show-toplevel"], folder).strip()
    rel = os.path.relpath(os.path.abspath(path), root).replace(os.sep, "/")
    log = git(["log", "--format=%H%x09%cI%x09%s", "--", rel], root)
    out = []
    for line in reversed(log.splitlines()):
        commit, date, subject = (line.split("\t", 2) + ["", ""])[:3]
        version = Version(commit, date, subject)
        try:
            version.env, version.records = parse_results(git(["show", f"{commit}:{rel}"], root), rel)
        except ValueError as exc:
            version.skipped = first_line(exc).removeprefix(f"{rel}: ")
        out.append(version)
    if not out:
        raise ValueError(f"{path}: no committed version in git history")
    return out


def machine_factor(ref: RunEnv, env: RunEnv) -> float | None:
    """``env``'s machine time over ``ref``'s (geometric mean of the calibration probes' median ratios)."""
    drift = machine_drift(ref, env)
    return drift["ratio"] if drift else None


def build(loaded: list[Version], metric: str, threshold: float, normalize: bool,
          profile: str | None = None) -> dict[str, list[Series]]:
    """Model -> one series per row key, a point per loaded version (None where the version lacks the row). The steps
    into one version are judged as one family (Holm), as bench.compare judges the rows of one comparison."""
    indexes = [{r.key(): r for r in v.records} for v in loaded]
    keys = list(dict.fromkeys(k for index in indexes for k, r in index.items() if figure_of(r, metric)))
    factors = [machine_factor(loaded[0].env, v.env) if normalize else 1.0 for v in loaded]
    families: dict[int, list[tuple[Point, Change, bool]]] = {}
    checks: dict[tuple[int, int], tuple[Priors, LogInterval | None, bool]] = {}
    out: dict[str, list[Series]] = {}
    for key in sorted(keys, key=lambda k: (list(dict.fromkeys(x[0] for x in keys)).index(k[0]), sort_key(k))):
        series = None
        prev: tuple[int, Record] | None = None
        for i, index in enumerate(indexes):
            rec = index.get(key)
            fig = figure_of(rec, metric) if rec is not None else None
            if fig is None or fig[2].median is None:
                if series is not None:
                    series.points.append(None)
                continue
            unit, lower, cell = fig
            if series is None:
                series = Series(key[0], key[1], rec.describe(), unit, lower, [None] * i)
            factor = factors[i]
            value = cell.median if factor is None else cell.median / factor if lower else cell.median * factor
            point = Point(value, cell.spread)
            if prev is not None:
                pair = (prev[0], i)  # one machine check and one profile lookup per pair of versions, not per row
                if pair not in checks:
                    checks[pair] = machine_check(loaded[pair[0]].env, loaded[i].env, threshold, normalize, profile)
                found = step_change(prev[1], rec, threshold, *checks[pair])
                if found is not None:
                    families.setdefault(i, []).append((point, *found))
            series.points.append(point)
            prev = (i, rec)
        if series is not None:
            out.setdefault(key[0], []).append(series)
    for family in families.values():
        family_verdicts([change for _, change, _ in family], threshold)
        for point, change, withheld in family:
            point.step = "withheld" if withheld else change.verdict
            point.ratio = change.slowdown
    return out


def machine_check(env_a: RunEnv, env_b: RunEnv, threshold: float, normalize: bool,
                  profile: str | None) -> tuple[Priors, LogInterval | None, bool]:
    """(the pair's priors, the machine interval to divide by under --normalize, whether verdicts are withheld)."""
    priors = priors_for(env_a, env_b, profile)
    drift = machine_drift(env_a, env_b, priors)
    changed = machine_changed(drift, threshold)
    return priors, drift["interval"] if changed and normalize else None, changed and not normalize


def step_change(ra: Record, rb: Record, threshold: float, priors: Priors, machine: LogInterval | None,
                withheld: bool) -> tuple[Change, bool] | None:
    """bench.compare's judgement of a -> b before the family rule, and whether the machine check withholds it."""
    change = judge(ra, rb, threshold, machine, priors.prior(ra.key()))
    return None if change is None else (change, withheld)


def step(env_a: RunEnv, env_b: RunEnv, ra: Record, rb: Record, threshold: float,
         normalize: bool, profile: str | None = None) -> tuple[str | None, float | None]:
    """bench.compare's verdict on a -> b alone (a family of one) and its time ratio, its machine check included."""
    found = step_change(ra, rb, threshold, *machine_check(env_a, env_b, threshold, normalize, profile))
    if found is None:
        return None, None
    change, withheld = found
    return ("withheld" if withheld else change.verdict), change.slowdown


def point_text(p: Point | None) -> str:
    if p is None:
        return "-"
    text = num(p.value) + (f" ± {pct(p.spread)}" if p.spread is not None else "")
    if p.step in ("regression", "improvement") and p.ratio and math.isfinite(p.ratio):
        word = f"{p.ratio:.2f}x slower" if p.ratio >= 1 else f"{1 / p.ratio:.2f}x faster"
        return f"**{text} ({word})**"
    return text + (" (machine changed)" if p.step == "withheld" else " ?" if p.step == "no verdict" else "")


def render(path: str, all_versions: list[Version], series: dict[str, list[Series]], metric: str, threshold: float,
           normalize: bool, plot_files: dict[str, str] | None = None) -> str:
    """The trend tables (``series`` from build over the versions read), after the list of versions read and
    skipped."""
    loaded = [v for v in all_versions if v.skipped is None]
    divided = (", divided by the machine calibration ratio against the first version read (a step is judged as "
               "bench.compare --normalize judges it: divided by the pair's machine ratio when the machines differ "
               "beyond T)") if normalize else ""
    out = [f"# History of `{path}`: {metric}", "",
           f"{len(all_versions)} committed versions, {len(loaded)} read, {len(all_versions) - len(loaded)} skipped. "
           f"Each cell is the record's median ± IQR as % of it{divided}; a **bold** cell is a step from the previous version "
           f"that bench.compare's rule flags at T = {threshold * 100:g}% (a t interval over the log process medians "
           "beyond T under Holm's rule over the steps into that version; a row measured in one process is judged "
           "with this machine's noise profile, see bench.compare --noise-profile); `?`: no verdict (one process and "
           "no profile: make one with `python -m bench.run --repeat 5`); `machine changed`: the calibration probes "
           "differ beyond T, so the step is withheld (pass --normalize to divide by it).", ""]
    out += [f"- {v.label} read: {v.subject[:90]}" for v in loaded]
    out += [f"- {v.label} **skipped**: {v.skipped}" for v in all_versions if v.skipped is not None]
    if len(loaded) < 1:
        return "\n".join(out + ["", "_No version of this file loads with the current schema._"]) + "\n"
    for model, rows in series.items():
        body = [[s.phase, s.label, s.unit, *(point_text(p) for p in s.points)] for s in rows]
        out += model_section(f"## {model}", model, body, [v.label for v in loaded], plot_files)
    return "\n".join(out) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m bench.history", description=__doc__.split("\n\n")[0],
                epilog="Exit status: 2 on bad input (not a committed file, a bad threshold); else 0.")
    p.add_argument("path", metavar="RESULTS.json", help="a results.json file tracked by git")
    p.add_argument("--metric", choices=METRICS, default="latency", help="latency (default) or throughput")
    p.add_argument("--normalize", action="store_true", help="divide by each run's machine calibration ratio")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD_PCT, metavar="PCT",
                   help=f"T of bench.compare's rule for a step (default {DEFAULT_THRESHOLD_PCT:g})")
    p.add_argument("--noise-profile", metavar="PATH",
                   help="the noise profile that judges rows measured in one process (default: each run's machine's "
                        "in the user cache; see bench.compare)")
    p.add_argument("--out", metavar="FILE.md", help="write the Markdown here (default: stdout); PNGs go beside it")
    p.add_argument("--plots", metavar="DIR", help="write one PNG per model here (default: beside --out)")
    return p


def main(argv: list[str] | None = None) -> int:
    from bench.analysis.matrix import emit

    args = build_parser().parse_args(argv)
    try:
        if not (math.isfinite(args.threshold) and args.threshold >= 0):
            raise ValueError(f"--threshold must be a percentage >= 0, not {args.threshold:g}")
        found = versions(args.path)
        if args.noise_profile:
            load_profile(args.noise_profile)  # a bad profile is one error line here, not a traceback mid-table
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    threshold = args.threshold / 100
    loaded = [v for v in found if v.skipped is None]
    series = build(loaded, args.metric, threshold, args.normalize, args.noise_profile) if loaded else {}

    def draw(folder: str) -> dict[str, str]:
        from bench.report.plots import history_pngs
        from zoo.atomic import atomic_open

        os.makedirs(folder, exist_ok=True)
        names = {}
        pngs = history_pngs(series, [v.label for v in loaded], args.metric)
        for model, png in pngs.items():
            names[model] = f"history_{args.metric}_{model}.png"
            with atomic_open(os.path.join(folder, names[model]), "wb") as f:
                f.write(png)
        return names

    try:
        emit(lambda names: render(args.path, found, series, args.metric, threshold, args.normalize, names),
             args.out, args.plots, draw)
    except OSError as exc:
        print(f"error: cannot write the history: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
