"""The benchmark driver: ``python -m bench.run`` measures every zoo model and writes OUT/<device>/.

Per model: build it (its checkpoint from ``python -m zoo.train`` when one exists, else seeded random init), one
"model" record, then every selected phase of ``bench.phases.PHASES`` in order. A phase that raises becomes its
``failed`` records and the run goes on; results are rewritten after every model with ``env.complete`` False until the
last one is done, so a crash or a Ctrl-C keeps what was measured and says that it is partial.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bench.cli import OneLineParser
from bench.model.selection import add_model_flags, announce_rejected, exit_code
from bench.profile.request import add_profile_arguments
from bench.runner.repeat import DEFAULT_REPEAT, QUICK_REPEAT, repeat_count
from bench.schedule.headlines import DEFAULT_PRECISION_PCT
from zoo.errors import UserError

DESCRIPTION = ("Benchmark the zoo: training throughput per data path, inference latency per backend, ONNX Runtime "
               "parity, multi-process scaling. Writes OUT/<device>/{results.json,results.csv,summary.md,*.png} and "
               "OUT/README.md.")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m bench.run", description=DESCRIPTION, raises=UserError)
    p.add_argument("--device", default="auto", help="auto (default: cuda > mps > cpu), cpu, cuda, cuda:N or mps; "
                                                    "cuda:N is made the current device for the whole run")
    add_model_flags(p)  # --models, --import
    p.add_argument("--phases", help="comma-separated phases (default: every phase a full run includes; with --quick "
                                    "those a smoke run includes); run in the registry's order")
    p.add_argument("--backends", help="comma-separated inference backends, each NAME or NAME:PRECISION (default: "
                                      "eager, compile, onnxruntime on CPU, plus cuda_graph and onnxruntime-cuda on "
                                      "CUDA, those that can run here; with --quick eager, onnxruntime)")
    p.add_argument("--batch-sizes", help="comma-separated inference batch sizes (default: 1 and the recipe's batch; "
                                         "with --quick 1 and a capped batch)")
    p.add_argument("--precisions", help="training precisions fp32, bf16, fp16 (default: fp32 plus those this "
                                        "hardware runs natively, bf16 on CPUs with AVX512-BF16/AMX, bf16 and fp16 on "
                                        "CUDA, fp16 on MPS; with --quick fp32); named here, they run regardless")
    p.add_argument("--train-variants", help="extra compute-bound training rows: channels_last, compile or "
                                            "compile=MODE, or none (default: channels_last,compile; --quick none)")
    p.add_argument("--checkpoints", help="folder of `python -m zoo.train` runs (NAME/best.pt); default runs/ when "
                                         "present, else random init")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data-root", help="folder with the torchvision datasets (default data/; models whose dataset "
                                         "is absent use synthetic data, and say so)")
    src.add_argument("--synthetic", action="store_true", help="synthetic data only (offline, same shapes)")
    p.add_argument("--quick", action="store_true", help="smoke run: short timings, small batches, fewer rows; "
                                                         "checks the harness in 1-2 minutes, not numbers to quote")
    p.add_argument("--threads", type=int, help="torch intra-op threads for the whole run (default: torch's own, "
                                               "usually the physical cores); recorded in env and every row")
    p.add_argument("--budget", help="seconds the whole command may take, start to exit (default 520, --quick 120; "
                                    "or none: every row at its full size): the plan is priced on this machine and "
                                    "fitted to it, rows that do not fit are skipped rows saying how to measure them")
    p.add_argument("--precision", type=float, metavar="PCT", help="the headline ratios (H1: fast vs tutorial_loop; "
                   "H2: the top two backends at batch 1 and the recipe's batch) are timed in interleaved rounds until "
                   "their 95%% interval is within +-PCT%% or their budget share is spent (default "
                   f"{DEFAULT_PRECISION_PCT:g}); each row says the interval reached and whether it met PCT")
    p.add_argument("--tta-target", action="append", default=[], metavar="MODEL=ACC",
                   help="tta phase: the test accuracy to reach for MODEL (a fraction, e.g. mlp=0.65; repeatable; "
                        "default: each tutorial's own figure)")
    p.add_argument("--scenarios", help="serve phase: LoadGen scenarios SingleStream, MultiStream, Server, Offline "
                                       "(default: all four; the AccuracyOnly row always runs)")
    p.add_argument("--server-latency-ms", type=float, help="serve phase: the Server scenario's p99 bound in ms "
                                                           "(default: per model, from its batch-1 latency)")
    p.add_argument("--max-procs", type=int, help="scale phase: most processes (default: CPU count, or GPU count)")
    p.add_argument("--out", default="bench-results", help="output root: OUT/<device>/ (default bench-results/, "
                                                          "untracked; the project's reference tables: --out results)")
    p.add_argument("--repeat", type=int, metavar="N",
                   help=f"measure each phase with raw samples in N fresh processes, one after the other, and merge "
                        f"them (bench.runner.repeat), so bench.compare sees run-to-run noise (default {DEFAULT_REPEAT}, "
                        f"--quick {QUICK_REPEAT})")
    add_profile_arguments(p)
    p.add_argument("--debug", action="store_true", help="let measurement errors raise with a traceback")
    return p


@dataclass
class Results:
    """What one run measured: its env block and its records (bench.records), in the order they were made, and the
    exit status the command line returns for it (0; 1 when a row failed or the files could not be written; 2 when
    another run holds the folder; 130 when interrupted). ``out_dir``: where its files are (None: none kept)."""

    env: Any
    records: list
    exit_code: int
    out_dir: str | None = None


class WriteFailed(Exception):
    """The result files could not be written (disk full, folder removed); the old ones are intact."""


def write_outputs(ctx, env, records, *, plots: bool) -> None:
    from bench.report.files import write_index, write_results

    try:
        write_results(ctx.out_dir, env, records, plots=plots)
        write_index(os.path.dirname(ctx.out_dir) or ".")
    except (OSError, ValueError) as exc:  # ValueError: a record the strict loader would refuse (bench.report.schema)
        raise WriteFailed(f"cannot write results under {ctx.out_dir}: {getattr(exc, 'strerror', None) or exc}") \
            from None


def save(ctx, env, records, started: float, *, complete: bool) -> None:
    from bench.runner.env import note_load
    from bench.schedule.budget import PLOTS_LABEL

    env.wall_s = round(time.time() - started, 1)
    note_load(env, "load_avg_at_end")
    env.done_rows, env.complete = len(records), complete
    if ctx.budget is not None:
        env.notes["budget"] = ctx.budget.summary()
    # Plots (slow to draw) once the run ends, complete or not, so they never lag the tables they illustrate; and not
    # when the budget dropped them.
    plots = complete and (ctx.budget is None or ctx.budget.keeps("", "report", PLOTS_LABEL))
    write_outputs(ctx, env, records, plots=plots)


def save_uninterrupted(ctx, env, records, started: float) -> None:
    """The last write of an interrupted run: a second Ctrl-C must not cut it (each file is atomic anyway)."""
    main_thread = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGINT, signal.SIG_IGN) if main_thread else None
    try:
        env.wall_s = round(time.time() - started, 1)
        env.done_rows, env.complete = len(records), False
        write_outputs(ctx, env, records, plots=False)
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, old)


def run_phase(phase, session, ctx, progress) -> list:
    """One phase on one model; an exception escaping it becomes the phase's failed records (--debug: it raises)."""
    from bench.records import not_ok
    from bench.schedule.rows import budget_skips

    pair = (session.name, phase.name)
    if ctx.budget is not None:
        ctx.budget.start(pair)  # re-fits what is left: rows that no longer fit are dropped here
    dropped = ctx.budget.dropped_in(pair) if ctx.budget is not None else []
    progress.start(*pair)
    ctx.activity = None
    t = time.perf_counter()
    try:
        planned = phase.planned_rows(session.name, ctx)
        records = list(phase.run(session, ctx)) if len(dropped) < planned else []
    except Exception as exc:  # KeyboardInterrupt is no Exception: it ends the run
        if ctx.debug:
            raise
        try:
            records = list(phase.failed(session, ctx, exc))
        except Exception:  # noqa: BLE001 - a broken failure handler must not hide the failure itself
            records = [not_ok(phase.record_type, session.name, ctx.device.type, exc)]
        records = [r for r in records if not any(d.fields and all(getattr(r, k, None) == v for k, v in d.fields.items())
                                                 for d in dropped)]  # the budget's rows are its skipped rows below
    for rec in records:  # every row says how many threads it ran with
        if hasattr(rec, "threads") and rec.threads is None:
            rec.threads = ctx.threads
    records += budget_skips(ctx, phase, dropped)
    session.cache.setdefault("phase_s", {})[phase.name] = round(time.perf_counter() - t, 2)
    progress.rows_done(records)
    progress.finish(*pair)
    if ctx.budget is not None:
        ctx.budget.finish(pair)
    return records


def bench_model(name: str, ctx, phases: list, progress, records: list, env) -> None:
    """Every record of one model, appended to ``records`` as it is made (so an interrupt keeps them)."""
    from bench.context import model_record, prepare_model
    from bench.records import ModelRecord, not_ok

    if ctx.budget is not None:
        ctx.budget.refit()
        if ctx.budget.drops_model(name):  # nothing of it fits: not even built, every row skipped for the budget
            skip_model(name, ctx, phases, progress, records)
            return
    try:
        session = prepare_model(name, ctx)
        first = model_record(session, ctx)
    except Exception as exc:  # a broken checkpoint (CheckpointError) or a model that does not build
        if ctx.debug:
            raise
        records.append(not_ok(ModelRecord, name, ctx.device.type, exc))
        progress.rows_done(records[-1:])
        if ctx.budget is not None:
            ctx.budget.finish_model(name)
        return
    records.append(first)
    progress.rows_done([first])
    try:
        for phase in phases:
            records.extend(run_phase(phase, session, ctx, progress))
    finally:
        # Where the run's time went: [seconds spent, seconds budgeted] per phase, to tune budgets and defaults by.
        spent = session.cache.get("phase_s", {})
        env.notes.setdefault("phase_s", {})[name] = {
            p: [s, None if ctx.budget is None else ctx.budget.given_s((name, p))] for p, s in spent.items()}
        if ctx.budget is not None:
            ctx.budget.finish_model(name)


def skip_model(name: str, ctx, phases: list, progress, records: list) -> None:
    """A model the budget dropped whole: a skipped model row and every planned row skipped for the budget."""
    from bench.records import ModelRecord, not_ok
    from bench.schedule.rows import budget_skips

    rows = [not_ok(ModelRecord, name, ctx.device.type, f"budget: none of its rows fit --budget {ctx.budget_s:.0f} s",
                   status="skipped")]
    for phase in phases:
        ctx.budget.start((name, phase.name))
        rows += budget_skips(ctx, phase, ctx.budget.dropped_in((name, phase.name)))
        ctx.budget.finish((name, phase.name))
    records += rows
    progress.rows_done(rows)


def free_model_memory(ctx) -> None:
    gc.collect()  # the model is gone: its memory goes to the next one (AlexNet holds 57M parameters)
    if ctx.device.type == "cuda":
        import torch

        torch.cuda.empty_cache()


def process_start() -> float:
    """When this process started (epoch seconds): the budget counts interpreter start-up and imports too."""
    try:
        import psutil

        return psutil.Process().create_time()
    except Exception:  # noqa: BLE001 - no process table: count from now
        return time.time()


def execute(ctx, phases: Mapping, *, command: str, skipped: dict, stream=None,
            started: float | None = None) -> Results:
    """Measure ctx.models x ctx.phases and write the results into ctx.out_dir; what was measured and the exit status
    (Results). ``started``: when the command started (default: now)."""
    from bench.report.staging import recover, stage_dir
    from bench.runner.lock import LockHeld, RunLock

    started = time.time() if started is None else started
    final = ctx.out_dir
    try:
        lock = RunLock(final).acquire()
    except LockHeld as exc:
        print(f"error: {exc}", file=stream or sys.stderr)
        return Results(None, [], exc.exit_code)
    try:
        recover(final)  # a promotion a kill cut short
        ctx.out_dir = stage_dir(final)  # written here, moved to OUT/<device> once complete
        results = measure_all(ctx, phases, command=command, skipped=skipped, stream=stream, started=started,
                              final=final)
    finally:
        lock.release()
    results.out_dir = ctx.out_dir
    return results


def measure_all(ctx, phases: Mapping, *, command: str, skipped: dict, stream, started: float,
                final: str) -> Results:
    from bench.context import weights_line
    from bench.measure.memory import frozen_heap
    from bench.runner import env as run_env
    from bench.runner.progress import Progress
    from bench.schedule import pricing
    from bench.schedule.budget import planned

    selected = [phases[name] for name in ctx.phases]
    env = run_env.environment(ctx, command)
    env.skipped_precisions = dict(skipped.get("skipped_precisions", {}))
    if skipped.get("skipped_backends"):
        env.notes["skipped_backends"] = dict(skipped["skipped_backends"])
    rows, costs = planned(ctx, selected)
    env.planned_rows = len(ctx.models) + sum(rows.values())
    progress = Progress(rows, costs, models=len(ctx.models), budget_s=ctx.budget_s, stream=stream,
                        detail=lambda: ctx.activity)
    records: list = []
    try:
        progress.message(header(ctx, env, final))
        progress.message(weights_line(ctx))
        import_s = time.time() - started  # interpreter, imports, the plan: what a torchrun launch pays again
        if ctx.budget_s:
            progress.eta = lambda: None  # until the plan is priced
        run_env.probe_machine(ctx, env)
        if ctx.budget_s:
            pricing.plan_budget(ctx, env, selected, progress, started, import_s)
        for i, name in enumerate(ctx.models):
            with frozen_heap():  # each row's garbage collections walk what the model made, not every import
                bench_model(name, ctx, selected, progress, records, env)
            free_model_memory(ctx)
            save(ctx, env, records, started, complete=i == len(ctx.models) - 1)
    except KeyboardInterrupt:
        progress.close()
        return Results(env, records, interrupted(ctx, env, records, started, stream))
    except WriteFailed as exc:
        progress.close()
        print(f"error: {exc}", file=stream or sys.stderr)
        return Results(env, records, 1)
    finally:
        progress.close()  # also when --debug lets an error through: no pulse outlives the run
        with contextlib.suppress(OSError):
            os.rmdir(ctx.out_dir)  # a staged folder that never got a file (stopped before the first write): gone
    return Results(env, records, finished(ctx, records, started, stream, final))


def header(ctx, env, final: str) -> str:
    budget = f"budget {ctx.budget_s:.0f} s" if ctx.budget_s else "no budget"
    n = len(ctx.models)
    return (f"bench: {n} model{'s' if n != 1 else ''} on {env.device_name} ({ctx.device}), phases "
            f"{','.join(ctx.phases) or 'none'}, {ctx.threads} threads, {budget}{' [QUICK]' if ctx.quick else ''}"
            f" -> {final}")


def interrupted(ctx, env, records, started: float, stream) -> int:
    err = stream or sys.stderr
    try:
        save_uninterrupted(ctx, env, records, started)
    except WriteFailed as exc:
        print(f"error: interrupted, and {exc}", file=err)
        return 130
    print(f"interrupted after {time.time() - started:.0f} s: {len(records)} of {env.planned_rows} planned rows "
          f"measured; kept INCOMPLETE in {ctx.out_dir} (the last complete run stays in place)", file=err)
    return 130


def finished(ctx, records, started: float, stream, final: str) -> int:
    from bench.report.index import write_index
    from bench.report.staging import promote

    err = stream or sys.stderr
    try:
        promote(ctx.out_dir, final)
        write_index(os.path.dirname(final) or ".")
    except OSError as exc:
        print(f"error: cannot move the finished run {ctx.out_dir} to {final}: {exc.strerror or exc}", file=err)
        return 1
    ctx.out_dir = final
    failed = sum(r.status == "failed" for r in records)
    skipped = sum(r.status == "skipped" for r in records)
    budget = sum(r.status == "skipped" and (r.reason or "").startswith("budget") for r in records)
    print(f"done in {time.time() - started:.0f} s: {len(records)} records ({failed} failed, {skipped} skipped, "
          f"{budget} of them for the budget) -> {os.path.join(final, 'summary.md')}", file=err)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """The command line: argv -> RunConfig -> the driver; the exit status."""
    started = process_start() if argv is None else time.time()  # the command line: from the process's start
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
        from bench.config import RunConfig
        from bench.measure.machine import intra_op_threads
        from bench.phases import PHASES as phases
        from bench.plan import make_context

        config = RunConfig.from_namespace(args)
        repeat = repeat_count(config.repeat, config.quick)
        ctx, skipped = make_context(config, phases)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted before anything was measured", file=sys.stderr)
        return 130
    command = " ".join(["python -m bench.run", *map(shlex.quote, argv)])
    argv = announce_rejected(skipped, argv, ctx.models)  # models that failed their check: exit 2 after the others
    try:
        with intra_op_threads(ctx.threads):  # restored after: main() also runs in-process (tests, notebooks)
            if repeat > 1:
                from bench.runner.repeat import run_repeated

                return exit_code(skipped, run_repeated(ctx, phases, argv, command, repeat))
            return exit_code(skipped, execute(ctx, phases, command=command, skipped=skipped, started=started).exit_code)
    except KeyboardInterrupt:  # after the last write (or during the first setup): nothing more to save
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
