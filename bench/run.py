"""The benchmark driver: ``python -m bench.run`` measures every zoo model and writes OUT/<device>/.

Per model: load it (its checkpoint from ``python -m zoo.train`` when one exists, else random init), one "model"
record, then the phases (train, infer, parity, and scale when bench.scale exists). A measurement that fails becomes a
"failed" record and the run goes on; results are rewritten after each model, so a crash keeps what was measured.
"""
from __future__ import annotations

import argparse
import gc
import importlib
import os
import shlex
import sys
import time
from dataclasses import dataclass
from typing import Any

from zoo.errors import UserError

PHASES = ("train", "infer", "parity", "scale")
DEFAULT_PHASES = ("train", "infer", "parity", "scale")
QUICK_PHASES = ("train", "infer", "parity")
# A full run also answers "does bf16 / channels_last / torch.compile beat eager fp32 on this device?" per model.
DEFAULT_PRECISIONS = {"cpu": ("fp32", "bf16"), "cuda": ("fp32", "bf16", "fp16"), "mps": ("fp32", "fp16")}
DEFAULT_VARIANTS = "channels_last,compile"
BACKENDS = ("eager", "compile", "onnxruntime", "onnxruntime-cuda", "cuda_graph")
ONNX_BACKENDS = ("onnxruntime", "onnxruntime-cuda")
DEFAULT_BACKENDS = ("eager", "compile", "onnxruntime")
QUICK_BACKENDS = ("eager", "onnxruntime")
QUICK_MAX_BATCH = 64


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print usage + message; we want one line
        raise UserError(f"{message} (see python -m bench.run --help)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m bench.run",
                description="Benchmark the zoo: training throughput per data path, inference latency per backend, "
                            "ONNX Runtime parity. Writes OUT/<device>/{results.json,results.csv,summary.md,*.png} "
                            "and OUT/README.md.")
    p.add_argument("--device", default="auto", help="auto (default: cuda > mps > cpu), cpu, cuda, cuda:N or mps")
    p.add_argument("--models", default="all", help="comma-separated zoo models, or all (default)")
    p.add_argument("--phases", help=f"comma-separated phases from: {', '.join(PHASES)} (default: "
                                    f"{','.join(DEFAULT_PHASES)}; with --quick {','.join(QUICK_PHASES)})")
    p.add_argument("--backends", help="comma-separated inference backends from: " + ", ".join(BACKENDS) +
                   f" (default: {','.join(DEFAULT_BACKENDS)}, plus onnxruntime-cuda and cuda_graph on CUDA; "
                   f"with --quick: {','.join(QUICK_BACKENDS)})")
    p.add_argument("--batch-sizes", help="comma-separated inference batch sizes (default: 1 and the recipe's batch "
                                         f"size; with --quick 1 and min(recipe, {QUICK_MAX_BATCH}))")
    p.add_argument("--precisions",
                   help="training precisions: fp32, bf16, fp16; each beyond fp32 adds a compute-bound row (default: "
                        "fp32,bf16 on cpu, fp32,bf16,fp16 on cuda, fp32,fp16 on mps; with --quick fp32)")
    p.add_argument("--train-variants",
                   help="extra compute-bound training rows: channels_last, compile or compile=MODE, or none "
                        f"(default: {DEFAULT_VARIANTS}; with --quick none)")
    p.add_argument("--checkpoints", help="folder of `python -m zoo.train` runs (NAME/best.pt); default runs/ when "
                                         "present, else random init")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data-root", help="folder with the torchvision datasets (default data/; models whose "
                                         "dataset is absent use synthetic data, and say so)")
    src.add_argument("--synthetic", action="store_true", help="synthetic data only (offline, same shapes)")
    p.add_argument("--quick", action="store_true", help="short timings and small batches: checks the harness, "
                                                         "the whole zoo in about two minutes on a laptop CPU")
    p.add_argument("--max-procs", type=int, help="scale phase: most processes (default: CPU count, or GPU count on CUDA)")
    p.add_argument("--out", default="results", help="output root (default results/); results go to OUT/<device>/")
    p.add_argument("--debug", action="store_true", help="let measurement errors raise with a traceback")
    return p


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _choose(flag: str, text: str, choices, what: str) -> list[str]:
    picked = _csv(text)
    if not picked:
        raise UserError(f"{flag} is empty; choose from: {', '.join(choices)}")
    for item in picked:
        if item not in choices:
            raise UserError(f"unknown {what} {item!r}; choose from: {', '.join(choices)}")
    return list(dict.fromkeys(picked))


@dataclass
class Plan:
    models: list[str]
    phases: list[str]
    backends: list[str]
    backends_given: bool
    batch_sizes: list[int] | None  # None: per model, from its recipe
    precisions: list[str]
    train_variants: list[dict[str, Any]]
    quick: bool
    max_procs: int | None


def _scale_available() -> bool:
    try:
        return hasattr(importlib.import_module("bench.scale"), "measure_scaling")
    except ImportError:
        return False


def make_plan(args: argparse.Namespace, device) -> Plan:
    """Validate every choice before measuring anything; a bad one is a UserError."""
    import zoo
    from zoo.engine import PRECISIONS

    models = zoo.list_models() if args.models.strip() == "all" else _choose("--models", args.models,
                                                                             zoo.list_models(), "model")
    phases = _choose("--phases", args.phases or ",".join(QUICK_PHASES if args.quick else DEFAULT_PHASES), PHASES,
                     "phase")
    if "scale" in phases and not _scale_available():
        raise UserError("phase 'scale' needs bench.scale.measure_scaling, which this checkout does not have")
    if args.backends is not None:
        backends = _choose("--backends", args.backends, BACKENDS, "backend")
    elif args.quick:
        backends = list(QUICK_BACKENDS)
    else:
        try:  # what can run on this device with this install, as the inference phase itself judges it
            backends = list(_load("bench.infer", "default_backends")(device))
        except (ImportError, AttributeError):
            backends = list(DEFAULT_BACKENDS)
    batch_sizes = None
    if args.batch_sizes is not None:
        try:
            batch_sizes = sorted({int(b) for b in _csv(args.batch_sizes)})
        except ValueError:
            raise UserError(f"--batch-sizes must be comma-separated positive integers, not {args.batch_sizes!r}") \
                from None
        if not batch_sizes or batch_sizes[0] < 1:
            raise UserError(f"--batch-sizes must be comma-separated positive integers, not {args.batch_sizes!r}")
    precisions_text = args.precisions or ("fp32" if args.quick else ",".join(DEFAULT_PRECISIONS[device.type]))
    precisions = _choose("--precisions", precisions_text, list(PRECISIONS), "precision")
    variants: list[dict[str, Any]] = []
    variants_text = args.train_variants if args.train_variants is not None else ("" if args.quick else DEFAULT_VARIANTS)
    for item in _csv("" if variants_text == "none" else variants_text):
        if item == "channels_last":
            variants.append({"channels_last": True})
        elif item == "compile" or item.startswith("compile="):
            variants.append({"compile": item.partition("=")[2] or "default"})
        else:
            raise UserError(f"unknown training variant {item!r}; choose from: channels_last, compile, compile=MODE")
    if args.max_procs is not None and args.max_procs < 1:
        raise UserError(f"--max-procs must be a positive integer, not {args.max_procs}")
    return Plan(models, phases, backends, args.backends is not None, batch_sizes, precisions, variants, args.quick,
                args.max_procs)


def batch_sizes_for(name: str, plan: Plan) -> list[int]:
    if plan.batch_sizes is not None:
        return plan.batch_sizes
    import zoo

    recipe_bs = zoo.get_spec(name).recipe.batch_size
    return sorted({1, min(recipe_bs, QUICK_MAX_BATCH) if plan.quick else recipe_bs})


# ---------------------------------------------------------------------------------------------------------------


class Progress:
    """``[i/N] model phase what ... result`` lines on stderr, one per measurement."""

    def __init__(self, total: int):
        self.total, self.done = total, 0

    def emit(self, rec: dict[str, Any]) -> None:
        self.done += 1
        self.total = max(self.total, self.done)
        head = " ".join(x for x in (str(rec.get("model")), str(rec.get("phase")), _what(rec)) if x)
        print(f"[{self.done}/{self.total}] {head} ... {_result(rec)}",
              file=sys.stderr, flush=True)


def _what(rec: dict[str, Any]) -> str:
    parts = [str(rec[k]) for k in ("loader", "backend") if rec.get(k)]
    if rec.get("batch_size") is not None:
        parts.append(f"b={rec['batch_size']}")
    if rec.get("precision") not in (None, "fp32"):
        parts.append(str(rec["precision"]))
    if rec.get("channels_last"):
        parts.append("channels_last")
    if rec.get("compile"):
        parts.append(f"compile={rec['compile']}")
    if rec.get("processes") is not None:
        parts.append(f"procs={rec['processes']}")
    return " ".join(parts)


def _result(rec: dict[str, Any]) -> str:
    if rec.get("status", "ok") != "ok":
        return f"{rec.get('status')}: {rec.get('reason', '')}"
    phase = rec.get("phase")
    if phase == "model":
        flops = rec.get("flops_per_sample")
        mflops = f"{flops / 1e6:.3g} MFLOPs/sample" if flops is not None else "FLOPs unknown"
        return (f"{rec.get('params_total', 0):,} params, {mflops}, {rec.get('weights')} weights, "
                f"{rec.get('data')} data")
    if phase == "infer" and rec.get("p50_ms") is not None:
        return f"{rec['p50_ms']:.3g} ms p50"
    if phase == "parity" and rec.get("max_abs_diff") is not None:
        agree = rec.get("argmax_agreement")
        return (f"max abs diff {rec['max_abs_diff']:.2e}" + (f", argmax agreement {agree:.2%}" if agree is not None
                                                              else "") + (" PASS" if rec.get("parity_ok") else " FAIL"))
    if rec.get("samples_per_s") is not None:
        return f"{rec['samples_per_s']:,.0f} samples/s"
    return "ok"


def _load(module: str, attr: str):
    """A measurement function, imported when first used: a phase whose module is missing or broken fails alone."""
    return getattr(importlib.import_module(module), attr)


def _load_later(module: str, attr: str):
    return lambda *a, **kw: _load(module, attr)(*a, **kw)


def _measure(fn, on_error, debug: bool) -> list[dict[str, Any]]:
    """Run one measurement; any exception becomes failure records (the benchmark of the other models goes on)."""
    try:
        out = fn()
        return [out] if isinstance(out, dict) else list(out)
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        if debug:
            raise
        return on_error(exc)


def bench_model(name: str, ctx, plan: Plan, progress: Progress, debug: bool = False) -> list[dict[str, Any]]:
    """Every record for one model; a model that cannot be loaded is one failed "model" record."""
    import zoo
    from bench.common import failure, flops_per_sample, prepare_model, record

    dev = ctx.device
    records: list[dict[str, Any]] = []

    spent: dict[str, float] = {}
    last = [time.perf_counter()]

    def lap(label: str) -> None:  # where a run's time goes: --quick has a budget to keep
        now = time.perf_counter()
        spent[label] = spent.get(label, 0.0) + now - last[0]
        last[0] = now

    def add(recs: list[dict[str, Any]]) -> None:
        for rec in recs:
            progress.emit(rec)
        records.extend(recs)

    try:
        model, info = prepare_model(name, ctx)
    except Exception as exc:  # broken checkpoint (CheckpointError) or a model that does not build
        if debug:
            raise
        add([failure(name, dev, "model", exc)])
        return records
    spec = zoo.get_spec(name)
    total, trainable = zoo.count_parameters(model)
    flops: dict[str, float | None] = {}
    for key, train in (("flops_per_sample", False), ("train_flops_per_sample", True)):
        try:
            flops[key] = flops_per_sample(model, name, dev, train=train)
        except Exception:  # noqa: BLE001 - a FLOP count is informative, not worth losing the model over
            flops[key] = None
    model.eval()
    add([record(name, dev, "model", params_total=total, params_trainable=trainable, **flops, **info,
                data="real" if ctx.uses_real_data(name) else "synthetic",
                input_shape="x".join(map(str, spec.input_shape)), dataset=spec.dataset)])
    lap("model")

    batch_sizes = batch_sizes_for(name, plan)
    infer_backends = plan.backends if "infer" in plan.phases else []
    onnx_path, export_info, export_error = None, {}, None
    if "parity" in plan.phases or any(b in ONNX_BACKENDS for b in infer_backends):
        path = os.path.join(ctx.out_dir, "onnx", f"{name}.onnx")
        try:
            export_info = dict(_load("bench.export", "export_onnx")(name, model, path))
            onnx_path = path
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            if debug:
                raise
            export_error = failure(name, dev, "parity", exc)["reason"]
        model.eval()
        lap("export")

    if "train" in plan.phases:
        measure_training = _load_later("bench.train_phase", "measure_training")
        add(_measure(lambda: measure_training(name, ctx, precisions=tuple(plan.precisions),
                                                      extra_variants=tuple(plan.train_variants)),
                     lambda exc: [failure(name, dev, "train", exc)], debug))
        lap("train")

    if infer_backends:
        measure_inference = _load_later("bench.infer", "measure_inference")
        for bs in batch_sizes:
            runnable = [b for b in infer_backends if not (b in ONNX_BACKENDS and export_error)]
            if runnable:
                add(_measure(lambda bs=bs, runnable=runnable: measure_inference(
                    name, model, ctx, batch_sizes=[bs], backends=runnable, onnx_path=onnx_path),
                    lambda exc, bs=bs, runnable=runnable: [failure(name, dev, "infer", exc, backend=b, batch_size=bs)
                                                           for b in runnable], debug))
            add([failure(name, dev, "infer", f"ONNX export failed: {export_error}", backend=b, batch_size=bs)
                 for b in infer_backends if b in ONNX_BACKENDS and export_error])
            if plan.quick and not plan.backends_given:
                add([record(name, dev, "infer", status="skipped", reason="quick: not run", backend="compile",
                            batch_size=bs)])
        lap("infer")

    if "parity" in plan.phases:
        if export_error:
            add([failure(name, dev, "parity", f"ONNX export failed: {export_error}")])
        else:
            def parity() -> dict[str, Any]:
                rec = dict(_load("bench.export", "measure_parity")(name, model, ctx, onnx_path))
                for key, value in export_info.items():  # the export's own numbers (opset, exporter, export_s)
                    rec.setdefault(key, value)
                return rec

            add(_measure(parity, lambda exc: [failure(name, dev, "parity", exc)], debug))
        lap("parity")

    if "scale" in plan.phases:
        measure_scaling = _load_later("bench.scale", "measure_scaling")
        add(_measure(lambda: measure_scaling(name, ctx, max_procs=plan.max_procs),
                     lambda exc: [failure(name, dev, "scale", exc)], debug))
        lap("scale")
    print(f"  {name}: {sum(spent.values()):.1f} s (" + ", ".join(f"{k} {v:.1f}" for k, v in spent.items()) + ")",
          file=sys.stderr, flush=True)
    return records


def planned_measurements(plan: Plan) -> int:
    """About how many progress lines a run prints (training may add variant rows)."""
    n = 0
    for name in plan.models:
        n += 1
        if "train" in plan.phases:
            n += 4 + len(plan.precisions) - 1 + len(plan.train_variants)
        if "infer" in plan.phases:
            n += len(batch_sizes_for(name, plan)) * (len(plan.backends) + (plan.quick and not plan.backends_given))
        n += ("parity" in plan.phases) + ("scale" in plan.phases)
    return n


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
        from zoo.engine import resolve_device

        device = resolve_device(args.device)
        plan = make_plan(args, device)
        if args.data_root is not None and not os.path.isdir(args.data_root):
            raise UserError(f"--data-root {args.data_root}: no such folder (use --synthetic to run without data)")
        if args.checkpoints is not None and not os.path.isdir(args.checkpoints):
            raise UserError(f"--checkpoints {args.checkpoints}: no such folder")
        dev_dir = os.path.join(args.out, device.type)
        try:  # find out now, not after the first model's measurements
            os.makedirs(dev_dir, exist_ok=True)
        except OSError as exc:
            raise UserError(f"--out {args.out}: cannot create {dev_dir} ({exc.strerror or exc})") from None
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code

    from bench.common import BenchContext, environment
    from bench.plots import write_plots
    from bench.report import write_index, write_results

    ctx = BenchContext(device=device, quick=args.quick, data_root=args.data_root or "data",
                       synthetic=args.synthetic, checkpoints=args.checkpoints or "runs", out_dir=dev_dir)
    env = environment(ctx)
    env["command"] = " ".join(["python -m bench.run", *map(shlex.quote, argv)])
    records: list[dict[str, Any]] = []
    progress = Progress(planned_measurements(plan))
    t0 = time.perf_counter()
    print(f"bench: {len(plan.models)} model{'s' if len(plan.models) != 1 else ''} on {env.get('device_name')} ({device}), phases "
          f"{','.join(plan.phases)}{' [QUICK]' if plan.quick else ''} -> {dev_dir}", file=sys.stderr, flush=True)
    interrupted = False
    try:
        for i, name in enumerate(plan.models):
            records.extend(bench_model(name, ctx, plan, progress, debug=args.debug))
            gc.collect()  # the model is gone: its memory goes to the next one (AlexNet holds 57M parameters)
            if device.type == "cuda":
                import torch

                torch.cuda.empty_cache()
            env["wall_s"] = round(time.perf_counter() - t0, 1)
            # Tables after every model, so a crash keeps them; plots (slower to draw) once, at the end.
            write_results(dev_dir, env, records, plots=i == len(plan.models) - 1)
            write_index(args.out)
    except KeyboardInterrupt:
        interrupted = True
        if records:
            write_plots(dev_dir, records)
    except UserError as exc:  # e.g. a data folder that breaks mid-run: one line, keep what was measured
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # the results cannot be written (disk full, folder removed): say so in one line
        print(f"error: cannot write results under {dev_dir}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    failed = sum(r.get("status") == "failed" for r in records)
    skipped = sum(r.get("status") == "skipped" for r in records)
    print(f"{'interrupted' if interrupted else 'done'} in {time.perf_counter() - t0:.0f} s: {len(records)} records "
          f"({failed} failed, {skipped} skipped) -> {os.path.join(dev_dir, 'summary.md')}", file=sys.stderr)
    if interrupted:
        return 130
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
