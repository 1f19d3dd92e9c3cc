"""``python -m bench.run --repeat N``: every repeated phase measured in N fresh processes, interleaved in time, and
the processes' records merged into one run.

A process is one draw of what a figure depends on beyond the code (the allocator's state, the thread pool's
placement, the compile cache, cuDNN's plans, the core it was scheduled on), so a row measured in one process has no
run-to-run noise in its interval. The driver here runs ``python -m bench.run`` N times with the same choices, each
into its own temporary folder: process k measures every model (in reverse order on odd k, so no model always runs
first or last) and every phase whose rows keep raw samples (train, infer, scale; phases without them run once, in
the first process), on 1/N of the run's budget, and calibrates the machine itself. The rows are then merged by key:
raw samples concatenated in process order with ``samples_per_repeat`` saying how many came from each, summary fields
(percentiles, medians, speed-ups) recomputed over all of them, and the calibration probes merged the same way, so
bench.compare can resample processes first. A row that failed or was skipped in any process is that row, with the
process named.
"""
from __future__ import annotations

import copy
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from bench.records import InferRecord, ModelRecord, Record, RunEnv, ScaleRecord, TrainRecord
from bench.report.load import load_results
from zoo.errors import UserError

if TYPE_CHECKING:
    from bench.context import BenchContext

# Processes per run when --repeat is not given. One by default: N processes split the budget N ways and pay imports,
# probes, pricing and builds N times, so the main job's budget would hold fewer rows. Its rows are judged by
# bench.compare against this machine's noise profile (which a --repeat 5 run writes) or get no verdict; --repeat N on
# both sides gives comparisons their own between-process interval.
DEFAULT_REPEAT = 1
QUICK_REPEAT = 1
SAMPLED = (TrainRecord, InferRecord, ScaleRecord)  # record types with raw samples: their phases are repeated
Launch = Callable[[list[str]], int]


def child_argv(argv: Sequence[str], ctx: BenchContext, k: int, n: int, out: str, repeated: list[str]) -> list[str]:
    """Process k's command line: the run's own, then (argparse keeps the last) one process, its folder, its share
    of the budget, its models' order and, after the first, only the repeated phases."""
    models = ctx.models if k % 2 == 0 else list(reversed(ctx.models))
    extra = ["--repeat", "1", "--out", out, "--models", ",".join(models)]
    if ctx.budget_s:
        extra += ["--budget", f"{ctx.budget_s / n:.6g}"]
    if k > 0:
        extra += ["--phases", ",".join(repeated)]
    return [*argv, *extra]


def launch_process(argv: list[str]) -> int:
    """Run one fresh ``python -m bench.run`` (its progress on this terminal); its exit status."""
    with subprocess.Popen([sys.executable, "-m", "bench.run", *argv]) as proc:
        try:
            return proc.wait()
        except KeyboardInterrupt:  # the child got the same SIGINT: let it save what it measured
            proc.wait(timeout=60)
            raise


def repeated_phases(ctx: BenchContext, phases: dict) -> list[str]:
    return [name for name in ctx.phases if issubclass(phases[name].record_type, SAMPLED)]


def run_repeated(ctx: BenchContext, phases: dict, argv: Sequence[str], command: str, repeat: int, *,
                 launch: Launch | None = None, stream=None) -> int:
    """Measure the run in ``repeat`` processes, merge them into ctx.out_dir; the exit status (as bench.run's)."""
    err = stream or sys.stderr
    t0 = time.perf_counter()
    repeated = repeated_phases(ctx, phases)
    runs: list[tuple[RunEnv, list[Record]]] = []
    codes: list[int] = []
    with tempfile.TemporaryDirectory(prefix="bench-repeat-") as tmp:
        for k in range(repeat if repeated else 1):
            out = os.path.join(tmp, f"p{k}")
            print(f"repeat: process {k + 1} of {repeat}", file=err, flush=True)
            try:
                codes.append((launch or launch_process)(child_argv(argv, ctx, k, repeat, out, repeated)))
            except KeyboardInterrupt:
                codes.append(130)
            path = os.path.join(out, ctx.device.type, "results.json")
            if os.path.exists(path):
                runs.append(load_results(path))
            if codes[-1] in (2, 130) or not os.path.exists(path):
                break
    if not runs:
        print(f"error: the first of {repeat} processes wrote no results (exit {codes[-1]})", file=err)
        return codes[-1] or 1
    env, records = merge_runs(runs, repeat)
    env.command, env.budget_s = command, ctx.budget_s
    env.wall_s = round(time.perf_counter() - t0, 1)
    env.complete = env.complete and len(runs) == (repeat if repeated else 1)
    write_merged(ctx, env, records)
    print(f"repeat: {len(runs)} processes merged -> {os.path.join(ctx.out_dir, 'summary.md')}", file=err)
    write_noise_profile(env, records, ctx.out_dir, err)
    if 130 in codes:
        return 130
    return 1 if any(r.status == "failed" for r in records) else 0


def write_noise_profile(env: RunEnv, records: list[Record], out_dir: str, err) -> None:
    """With >= 5 processes, this machine's noise profile beside the results and in the user cache, so that one-process
    runs compared later on this machine get a verdict (bench.analysis.noise)."""
    from bench.analysis.noise import MIN_PROCESSES, save_profile

    saved = save_profile(env, records, out_dir)
    if saved is None:
        if env.repeat < MIN_PROCESSES:
            print(f"repeat: no noise profile (it takes --repeat {MIN_PROCESSES} or more)", file=err)
        return
    profile, paths = saved
    print(f"repeat: noise profile of {len(profile.rows)} rows ({profile.processes} processes, {profile.machine}, "
          f"{profile.threads} threads) -> {', '.join(paths)}", file=err)


def write_merged(ctx: BenchContext, env: RunEnv, records: list[Record]) -> None:
    from bench.report.files import write_index, write_results

    write_results(ctx.out_dir, env, records, plots=True)
    write_index(os.path.dirname(ctx.out_dir) or ".")


def merge_runs(runs: list[tuple[RunEnv, list[Record]]], repeat: int) -> tuple[RunEnv, list[Record]]:
    """One run of several processes' runs (the first one's order and one-off rows)."""
    groups: dict[tuple, list[tuple[int, Record]]] = {}
    for k, (_, recs) in enumerate(runs):
        for rec in recs:
            groups.setdefault(rec.key(), []).append((k, rec))
    records = [merge_rows(rows, len(runs)) for rows in groups.values()]
    env = merge_env([e for e, _ in runs], repeat)
    derive_all(records, env)
    return env, records


def _samples_name(rec: Record) -> str:
    return "latencies_ms" if isinstance(rec, InferRecord) else "window_rates"


def merge_rows(rows: list[tuple[int, Record]], n: int) -> Record:
    """The row measured in processes ``rows`` (k, record): pooled when every process measured it, else the first
    process's row that is not ok, its reason naming the process."""
    first = rows[0][1]
    bad = [(k, r) for k, r in rows if not r.ok]
    if bad:
        k, rec = bad[0]
        merged = copy.copy(rec)
        merged.reason = f"process {k + 1} of {n}: {rec.reason or 'no reason recorded'}" if len(rows) > 1 else rec.reason
        return merged
    if not isinstance(first, SAMPLED) or len(rows) == 1:
        return first
    name = _samples_name(first)
    per = [list(getattr(r, name) or []) for _, r in rows]
    merged = copy.copy(first)
    setattr(merged, name, [v for p in per for v in p])
    merged.samples_per_repeat = [len(p) for p in per]
    return merged


def merge_env(envs: list[RunEnv], repeat: int) -> RunEnv:
    env = copy.deepcopy(envs[0])
    env.repeat = len(envs)
    env.calibration = merge_calibration([e.calibration for e in envs])
    env.complete = all(e.complete for e in envs)
    env.notes["repeat"] = {
        "asked": repeat, "processes": len(envs),
        "how": "each repeated phase in one fresh python -m bench.run per process, one after the other, models in "
               "reverse order on every second process; rows pooled with samples_per_repeat",
        "per_process": [{"wall_s": e.wall_s, "load_avg_at_start": e.notes.get("load_avg_at_start"),
                         "load_avg_at_end": e.notes.get("load_avg_at_end"), "timestamp": e.timestamp,
                         "phase_s": e.notes.get("phase_s")} for e in envs]}
    return env


def merge_calibration(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    """The first block, each probe's samples those of every process that has the probe, with samples_per_repeat."""
    merged = copy.deepcopy(blocks[0]) if blocks and isinstance(blocks[0], dict) else {}
    probes = merged.get("probes")
    if not isinstance(probes, dict):
        return merged
    for name, probe in probes.items():
        per = [b["probes"][name]["samples_ms"] for b in blocks
               if isinstance(b.get("probes"), dict) and isinstance(b["probes"].get(name), dict)]
        if len(per) > 1:
            pooled = [v for p in per for v in p]
            probe.update(samples_ms=pooled, samples_per_repeat=[len(p) for p in per],
                         median_ms=float(sorted(pooled)[len(pooled) // 2]))
    merged["method"] = f"{merged.get('method', '')}; taken in each of {len(blocks)} processes"
    return merged


def pooled_stats(rec: Record) -> None:
    """A pooled row's summary fields over all its processes' samples, as its phase computes them."""
    from bench.measure.timing import latency_stats, window_stats

    if isinstance(rec, InferRecord):
        stats = latency_stats([v / 1e3 for v in rec.latencies_ms], rec.batch_size or 1)
        stats.pop("latencies_ms")
    else:
        stats = window_stats(rec.window_rates)
        stats.pop("window_rates")
    for key, value in stats.items():
        setattr(rec, key, value)


def derive_all(records: list[Record], env: RunEnv) -> None:
    """Every derived field of the pooled rows recomputed (speed-ups, ladder gains, % of peak, scaling efficiency)."""
    from bench.measure.machine import pct_of_peak
    from bench.phases.infer import fill_speedups
    from bench.phases.scale import ideal_for
    from bench.phases.train.derive import derive

    for rec in records:
        if isinstance(rec, SAMPLED) and rec.ok and rec.samples_per_repeat:
            pooled_stats(rec)
    for model in dict.fromkeys(r.model for r in records):
        mine = [r for r in records if r.model == model]
        info = next((r for r in mine if isinstance(r, ModelRecord)), None)
        infer = [r for r in mine if isinstance(r, InferRecord)]
        fill_speedups(infer)
        for r in infer:
            if r.ok and r.samples_per_repeat and info and info.flops_per_sample and r.samples_per_s:
                r.gflops_per_s = info.flops_per_sample * r.samples_per_s / 1e9
                r.pct_of_peak = pct_of_peak(r.gflops_per_s * 1e9, env.peaks, r.precision)
        derive([r for r in mine if isinstance(r, TrainRecord)], info and info.train_flops_per_sample, env.peaks)
        scale = [r for r in mine if isinstance(r, ScaleRecord) and r.ok]
        rate_1 = next((r.samples_per_s for r in scale if r.processes == 1), None)
        for r in scale:
            r.ideal, r.ideal_samples_per_s = ideal_for(r.device, r.processes or 1, rate_1)
            r.scaling_efficiency = r.samples_per_s / r.ideal_samples_per_s if r.ideal_samples_per_s else None


def repeat_count(flag: int | None, quick: bool) -> int:
    """Processes per run: --repeat, else the default."""
    if flag is not None and flag < 1:
        raise UserError(f"--repeat must be a positive integer, not {flag}")
    if flag is not None:
        return flag
    return QUICK_REPEAT if quick else DEFAULT_REPEAT
