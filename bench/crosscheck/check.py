"""Cross-check the harness's rows against each vendor's own way of timing the same thing.

    python -m bench.crosscheck --models mlp,lenet [--device cpu] [--threads N] [--repeats 3]
    python -m bench.crosscheck --models lenet,cifar_cnn --backends eager,openvino,onnxruntime --batch-sizes 1,64

``eager`` (batch 1): the infer phase's own path (the ``eager`` backend's bound call, bench.measure.timing's clock and
sampling plan, the backend's sync inside every call) against torch.utils.benchmark's blocked_autorange on the same
module, input and threads; a ratio outside ``--tolerance`` (15%) fails. ``openvino`` / ``openvino-dynamic``: the
backend's row as the infer phase measures it, then OpenVINO's ``benchmark_app`` (bench.crosscheck.benchmark_app) on the row's own
IR, input, shape and plugin configuration; ``onnxruntime``: the row, then a minimal hand-written session loop (a
default session with the same threads, ``sess.run`` timed per call). The sides are interleaved ``--repeats`` times,
so a burst of load from another process hits both; ratio = median of the harness's p50s / median of the vendor's
medians, each printed with its rounds. A vendor ratio beyond VENDOR_LIMIT (1.25) is explained from measurements: the
harness's floor per call (the noop backend) and, for OpenVINO, the runtime's own latency of the harness's calls
(``InferRequest.latency``, benchmark_app's own measure), so the gap splits into the Python call and the runtime;
a gap that these do not account for (or a configuration that differs from benchmark_app's) fails. Exit status 0
when every row passes, 1 when not, 2 on bad arguments.
"""
from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile

import torch

import zoo
from bench.backends import BACKENDS
from bench.context import BenchContext, ModelSession, example_batch, prepare_model
from bench.crosscheck.vendor import VENDOR_BACKENDS, VendorRow, vendor_rows
from bench.measure import timing
from bench.measure.numerics import apply_policy
from bench.runner.env import harness_floor
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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.crosscheck", description=__doc__.split("\n")[0])
    p.add_argument("--models", default="mlp,lenet", help="comma-separated zoo models (default mlp,lenet)")
    p.add_argument("--backends", default="eager",
                   help=f"comma-separated: eager, {', '.join(VENDOR_BACKENDS)} (default eager)")
    p.add_argument("--batch-sizes", default="1", help="batch sizes of the vendor rows (default 1; eager: 1 only)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | mps | auto (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch threads for both sides (default: torch's)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved harness/vendor rounds (default 3)")
    p.add_argument("--tolerance", type=float, default=0.15, help="eager: allowed |ratio - 1| (default 0.15)")
    p.add_argument("--vendor-seconds", type=float, default=3.0, help="seconds per benchmark_app / loop run")
    p.add_argument("--checkpoints", default="runs", help="folder with NAME/best.pt; random weights when absent")
    return p.parse_args(argv)


def checked(args: argparse.Namespace) -> tuple[list[str], list[str], list[int]]:
    """(models, backends, batch sizes) of the command line; UserError naming the bad one."""
    if args.repeats < 1:
        raise UserError("--repeats must be at least 1")
    if args.threads is not None:
        if args.threads < 1:
            raise UserError("--threads must be at least 1")
        torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    for n in names:
        zoo.get_spec(n)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    for b in backends:
        if b != "eager" and b not in VENDOR_BACKENDS:
            raise UserError(f"unknown backend {b!r} for the cross-check; choose from eager, {', '.join(VENDOR_BACKENDS)}")
    try:
        sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    except ValueError:
        raise UserError(f"--batch-sizes must be integers, not {args.batch_sizes!r}") from None
    if not sizes or min(sizes) < 1 or not names or not backends:
        raise UserError("--models, --backends and --batch-sizes must each name at least one (batch sizes >= 1)")
    return names, backends, sizes


def measure_all(args: argparse.Namespace, names: list[str], backends: list[str], sizes: list[int],
                out_dir: str) -> tuple[BenchContext, list[dict], list[VendorRow], dict]:
    device = resolve_device(args.device)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)  # every piece also passes the device; this makes it current for the rest
    apply_policy(device)  # the maths policy of a bench run, for both sides
    ctx = BenchContext(device=device, checkpoints=args.checkpoints, out_dir=out_dir)
    floor = harness_floor(ctx)
    eager, vendor = [], []
    for n in names:
        session = prepare_model(n, ctx)
        if "eager" in backends:
            eager.append(crosscheck(n, ctx, args.repeats, session=session))
        for b in (b for b in backends if b != "eager"):
            vendor += vendor_rows(BACKENDS[b], session, ctx, sizes, repeats=args.repeats,
                                  seconds=args.vendor_seconds, floor_us=floor["p50_us"], work_dir=out_dir)
    return ctx, eager, vendor, floor


def print_eager(results: list[dict], tolerance: float) -> bool:
    print(f"{'model':<18}{'harness p50 ms':>16}{'Timer median ms':>17}{'ratio':>8}  within {tolerance:.0%}")
    ok = True
    for r in results:
        inside = abs(r["ratio"] - 1) <= tolerance
        ok &= inside
        print(f"{r['model']:<18}{r['harness_p50_ms']:>16.4f}{r['timer_median_ms']:>17.4f}{r['ratio']:>8.3f}  "
              f"{'yes' if inside else 'NO'}")
        runs = ", ".join(f"{h:.4f}/{t:.4f}" for h, t in zip(r["harness_runs_ms"], r["timer_runs_ms"]))
        print(f"{'':<18}rounds (harness/Timer ms): {runs}")
    return ok


def print_vendor(rows: list[VendorRow]) -> bool:
    print(f"{'model':<12}{'backend':<18}{'batch':>6}{'harness p50 ms':>16}{'vendor median ms':>18}{'ratio':>8}  vendor")
    ok = True
    for r in rows:
        ok &= r.passes()
        print(f"{r.model:<12}{r.backend:<18}{r.batch_size:>6}{r.harness_ms():>16.4f}{r.vendor_ms():>18.4f}"
              f"{r.ratio():>8.3f}  {r.vendor}")
        for line in r.details():
            print(f"{'':<12}{line}")
    return ok


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        names, backends, sizes = checked(args)
        with tempfile.TemporaryDirectory(prefix="crosscheck-") as out_dir:
            ctx, eager, vendor, floor = measure_all(args, names, backends, sizes, out_dir)
    except (UserError, UnknownModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a measurement that broke: one line, not a traceback
        print(f"error: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}",
              file=sys.stderr)
        return 1
    print(f"device {ctx.device.type}, torch threads {torch.get_num_threads()}, {args.repeats} interleaved rounds; "
          f"harness floor per call (noop backend) p50 {floor['p50_us']:.2f} us ± {floor['iqr_us']:.2f} "
          f"({floor['n_calls']:,} calls)")
    ok = print_eager(eager, args.tolerance) if eager else True
    if vendor:
        ok &= print_vendor(vendor)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
