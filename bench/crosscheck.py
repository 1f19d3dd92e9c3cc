"""Cross-check the harness's eager batch-1 p50 against torch.utils.benchmark.Timer.blocked_autorange().

    python -m bench.crosscheck --models mlp,lenet [--device cpu] [--threads N] [--repeats 3]

Both time the same module on the same fixed input under torch.inference_mode with the same thread count: the harness
side is the infer phase's own path (the ``eager`` backend's bound call, bench.measure.timing's clock and sampling plan, the
backend's sync inside every call), the other is torch.utils.benchmark's blocked_autorange. The two are interleaved
``--repeats`` times and each side's median is compared, so a burst of load from another process hits both. Exit
status 0 when every ratio is within ``--tolerance`` (15%), 1 when not, 2 on bad arguments.
"""
from __future__ import annotations

import argparse
import logging
import statistics
import sys

import torch

import zoo
from bench.backends import BACKENDS
from bench.context import BenchContext, ModelSession, example_batch, prepare_model
from bench.measure import timing
from bench.measure.numerics import apply_policy
from zoo.engine import resolve_device
from zoo.errors import UserError
from zoo.registry import UnknownModelError


def harness_p50_ms(session: ModelSession, ctx: BenchContext, x: torch.Tensor) -> float:
    """The eager batch-1 p50 exactly as the infer phase measures it."""
    backend = BACKENDS["eager"](session, ctx)
    backend.prepare()
    try:
        with torch.inference_mode():
            fn = backend.bind(x)
            plan = timing.sampling_plan(x.shape[0], ctx.quick)
            samples = timing.sample_latencies(fn, backend.sync, **plan)
    finally:
        backend.close()
    return timing.latency_stats(samples, x.shape[0])["p50_ms"]


def crosscheck(name: str, ctx: BenchContext, repeats: int = 3, min_run_time_s: float = 1.0,
               session: ModelSession | None = None) -> dict:
    # Importing torch.utils.benchmark loads cpp_extension, which warns about CUDA_HOME on CPU-only machines.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    import torch.utils.benchmark as tbench

    session = session or prepare_model(name, ctx)
    model = session.model
    x = example_batch(name, 1, ctx.device, seed=ctx.seed)
    harness_ms, timer_ms = [], []
    for _ in range(repeats):
        harness_ms.append(harness_p50_ms(session, ctx, x))
        timer = tbench.Timer(stmt="model(x)", globals={"model": model, "x": x}, num_threads=torch.get_num_threads(),
                             label=name, description="eager batch 1")
        with torch.inference_mode():  # thread-local, and the Timer runs its loop in this thread
            timer_ms.append(timer.blocked_autorange(min_run_time=min_run_time_s).median * 1e3)
    h, t = statistics.median(harness_ms), statistics.median(timer_ms)
    return {"model": name, "threads": torch.get_num_threads(), "harness_p50_ms": h, "timer_median_ms": t,
            "ratio": h / t, "harness_runs_ms": harness_ms, "timer_runs_ms": timer_ms, "clock": timing.CLOCK}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.crosscheck", description=__doc__.split("\n")[0])
    p.add_argument("--models", default="mlp,lenet", help="comma-separated zoo models (default mlp,lenet)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | mps | auto (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch threads for both sides (default: torch's)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved harness/Timer rounds (default 3)")
    p.add_argument("--tolerance", type=float, default=0.15, help="allowed |ratio - 1| (default 0.15)")
    p.add_argument("--checkpoints", default="runs", help="folder with NAME/best.pt; random weights when absent")
    args = p.parse_args(argv)
    try:
        if args.repeats < 1:
            raise UserError("--repeats must be at least 1")
        if args.threads is not None:
            if args.threads < 1:
                raise UserError("--threads must be at least 1")
            torch.set_num_threads(args.threads)
        names = [n.strip() for n in args.models.split(",") if n.strip()]
        for n in names:
            zoo.get_spec(n)
        device = resolve_device(args.device)
        if device.type == "cuda" and device.index is not None:
            torch.cuda.set_device(device)  # every piece also passes the device; this makes it current for the rest
        apply_policy(device)  # the maths policy of a bench run, for both sides
        ctx = BenchContext(device=device, checkpoints=args.checkpoints)
        results = [crosscheck(n, ctx, args.repeats) for n in names]
    except (UserError, UnknownModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a measurement that broke: one line, not a traceback
        print(f"error: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}",
              file=sys.stderr)
        return 1
    print(f"device {ctx.device.type}, torch threads {torch.get_num_threads()}, {args.repeats} interleaved rounds")
    print(f"{'model':<18}{'harness p50 ms':>16}{'Timer median ms':>17}{'ratio':>8}  within {args.tolerance:.0%}")
    ok = True
    for r in results:
        inside = abs(r["ratio"] - 1) <= args.tolerance
        ok &= inside
        print(f"{r['model']:<18}{r['harness_p50_ms']:>16.4f}{r['timer_median_ms']:>17.4f}{r['ratio']:>8.3f}  "
              f"{'yes' if inside else 'NO'}")
        runs = ", ".join(f"{h:.4f}/{t:.4f}" for h, t in zip(r["harness_runs_ms"], r["timer_runs_ms"]))
        print(f"{'':<18}rounds (harness/Timer ms): {runs}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
