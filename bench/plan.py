"""The plan of a run: every command-line choice validated before anything is measured, and every decision made once
(device, threads, models, phases, backends, batch sizes, precisions, variants, budget) into a BenchContext.

A bad choice is a UserError (one line, exit 2). Defaults are sized so that a full ``python -m bench.run`` on a
2-core CPU ends within 10 minutes and ``--quick`` is a 1-2 minute smoke run of the whole zoo (see DEFAULT_BUDGET_S).
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from bench.backends import BACKENDS
from bench.config import RunConfig
from bench.context import BenchContext
from bench.model.selection import pick_models
from bench.phases.base import Phase
from bench.phases.tta import parse_targets
from bench.profile.request import profile_request
from bench.records import PRECISIONS, SERVE_SCENARIOS
from bench.runner.env import precision_support
from bench.schedule.budget import DEFAULT_BUDGET_S, QUICK_BUDGET_S
from bench.schedule.headlines import DEFAULT_PRECISION_PCT
from zoo.engine import PRECISIONS as TRAIN_PRECISIONS
from zoo.engine import resolve_device
from zoo.errors import UserError

# The deployment backends people choose between, each with accuracy on its row. Heavier one-off builds
# (onnxruntime-int8-dynamic, aot_inductor's C++ package) are one --backends away; a backend whose package is missing
# is still planned, and its rows say "skipped" with the install command.
DEFAULT_BACKENDS = {"cpu": ("eager", "compile", "onnxruntime", "onnxruntime-int8:int8", "openvino"),
                    "cuda": ("eager", "eager:bf16", "eager:fp16", "compile", "cuda_graph", "onnxruntime",
                             "onnxruntime-cuda", "tensorrt"),
                    "mps": ("eager", "compile")}
QUICK_BACKENDS = ("eager", "onnxruntime")
# A full run answers "does bf16 / channels_last / torch.compile beat eager fp32 here?"; precisions the hardware has
# no native kernels for are left out (env.skipped_precisions says why) unless --precisions names them.
DEFAULT_PRECISIONS = {"cpu": ("fp32", "bf16"), "cuda": ("fp32", "bf16", "fp16"), "mps": ("fp32", "fp16")}
DEFAULT_VARIANTS = ("channels_last", "compile")


def csv_items(value: str | Sequence) -> list[str]:
    """The names a choice holds: comma-separated text (a command line) or a sequence (RunConfig from Python)."""
    items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    return [t.strip() for t in items if t.strip()]


def choose(flag: str, text: str, choices, what: str) -> list[str]:
    picked = csv_items(text)
    if not picked:
        raise UserError(f"{flag} is empty; choose from: {', '.join(choices)}")
    for item in picked:
        if item not in choices:
            raise UserError(f"unknown {what} {item!r}; choose from: {', '.join(choices)}")
    return list(dict.fromkeys(picked))


def pick_device(name: str) -> torch.device:
    """The run's device; ``cuda:N`` becomes the current CUDA device before anything else touches CUDA."""
    device = resolve_device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count()
        index = 0 if device.index is None else device.index
        if index >= count:
            raise UserError(f"--device {name}: this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})")
        torch.cuda.set_device(index)
        device = torch.device("cuda", index)
    return device


def pick_max_procs(value: int | None, device: torch.device) -> int | None:
    """--max-procs: a positive integer, on CUDA at most the GPUs there are (each scale process has its own)."""
    value = positive("--max-procs", value)
    if value is not None and device.type == "cuda" and value > torch.cuda.device_count():
        raise UserError(f"--max-procs {value}: the scale phase runs one process per GPU and this machine has "
                        f"{torch.cuda.device_count()} CUDA device(s)")
    return value


def pick_phases(text: str | None, phases: Mapping[str, Phase], quick: bool) -> list[str]:
    if text is not None:
        picked = set(choose("--phases", text, list(phases), "phase"))
        return [name for name in phases if name in picked]  # the registry's order, whatever the flag's
    return [name for name, phase in phases.items() if (phase.in_quick if quick else phase.in_default)]


def pick_backends(text: str | None, device: torch.device, quick: bool) -> tuple[list[str], dict[str, str]]:
    """(backends, left out of the default plan -> why). Explicit names are validated only: a backend that cannot
    run here is the inference phase's skipped row, with its reason."""
    if text is not None:
        picked = csv_items(text)
        if not picked:
            raise UserError(f"--backends is empty; choose from: {', '.join(BACKENDS)}")
        return list(dict.fromkeys(backend_key(item) for item in picked)), {}
    backends, skipped = [], {}
    for name in QUICK_BACKENDS if quick else DEFAULT_BACKENDS[device.type]:
        cls = BACKENDS.get(name)
        reason = "not implemented in this checkout" if cls is None else cls.available(device)
        # A backend for another kind of device is left out of the plan (said in env.notes); one this device could
        # run but that lacks its package (or provider, or compiler) stays, so its rows say why and how to get it.
        if reason is None or (cls is not None and device.type in cls.devices):
            backends.append(name)
        else:
            skipped[name] = reason
    return backends, skipped


def backend_key(item: str) -> str:
    """The BACKENDS key a user's NAME or NAME:PRECISION means: a backend with one precision answers to its bare name
    (``onnxruntime-int8`` is ``onnxruntime-int8:int8``). UserError: an unknown name or precision."""
    name, _, precision = item.partition(":")
    if precision and precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r} in backend {item!r}; choose from: {', '.join(PRECISIONS)}")
    if item in BACKENDS:
        return item
    known = [key for key in BACKENDS if key.partition(":")[0] == name]
    if not precision and len(known) == 1:
        return known[0]
    if not known:
        raise UserError(f"unknown backend {name!r}; choose from: {', '.join(BACKENDS)}")
    raise UserError(f"backend {name!r} has no {precision or 'fp32'} precision here; choose from: "
                    f"{', '.join(known)}")


def pick_precisions(text: str | None, device: torch.device, quick: bool) -> tuple[list[str], dict[str, str]]:
    """(training precisions, left out of the default plan -> why). Explicit --precisions run as asked."""
    if text is not None:
        return choose("--precisions", text, list(TRAIN_PRECISIONS), "precision"), {}
    if quick:
        return ["fp32"], {}
    support = precision_support(device)
    wanted = DEFAULT_PRECISIONS[device.type]
    kept = [p for p in wanted if support.get(p, "no capability probe for it") is None]
    skipped = {p: support.get(p) or "no capability probe for it" for p in wanted if p not in kept}
    return kept, skipped


def pick_variants(text: str | Sequence[str] | None, quick: bool) -> list[dict[str, Any]]:
    items = csv_items(text if text is not None else ("none" if quick else ",".join(DEFAULT_VARIANTS)))
    variants: list[dict[str, Any]] = []
    for item in [] if items == ["none"] else items:
        if item == "channels_last":
            variants.append({"channels_last": True})
        elif item == "compile" or item.startswith("compile="):
            variants.append({"compile": item.partition("=")[2] or "default"})
        else:
            raise UserError(f"unknown training variant {item!r}; choose from: channels_last, compile, compile=MODE, "
                            "none")
    return variants


def pick_batch_sizes(text: str | None) -> list[int] | None:
    if text is None:
        return None  # per model: 1 and the recipe's batch (capped in --quick)
    bad = UserError(f"--batch-sizes must be comma-separated positive integers, not {text!r}")
    try:
        sizes = sorted({int(b) for b in csv_items(text)})
    except ValueError:
        raise bad from None
    if not sizes or sizes[0] < 1:
        raise bad
    return sizes


def pick_budget(text: str | float | None, quick: bool) -> float | None:
    if text is None:
        return QUICK_BUDGET_S if quick else DEFAULT_BUDGET_S
    text = str(text)
    if text.strip().lower() == "none":
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise UserError(f"--budget must be a positive number of seconds (or none), not {text!r}")
    return seconds


def positive(flag: str, value: int | None) -> int | None:
    if value is not None and value < 1:
        raise UserError(f"{flag} must be a positive integer, not {value}")
    return value


def pick_precision(value: float | None) -> float:
    """--precision PCT: a headline ratio's 95% interval within +-PCT% of it (default DEFAULT_PRECISION_PCT)."""
    if value is None:
        return DEFAULT_PRECISION_PCT
    if not 0 < value < 100:
        raise UserError(f"--precision must be a percentage above 0 and below 100, not {value:g}")
    return float(value)


def check_folders(args: RunConfig, device: torch.device) -> str:
    """Input folders exist and OUT can hold OUT/<device> (made last: a bad flag leaves nothing behind). The device
    folder itself is made by a run that completes (bench.report.staging.promote)."""
    if args.data_root is not None and not os.path.isdir(args.data_root):
        raise UserError(f"--data-root {args.data_root}: no such folder (use --synthetic to run without data)")
    if args.checkpoints is not None and not os.path.isdir(args.checkpoints):
        raise UserError(f"--checkpoints {args.checkpoints}: no such folder")
    if args.out is None:
        raise UserError("no output folder: give --out (bench.launch makes a scratch folder when out is None)")
    dev_dir = os.path.join(args.out, device.type)
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {args.out}: cannot create it ({exc.strerror or exc})") from None
    if not os.access(args.out, os.W_OK | os.X_OK) or (os.path.isdir(dev_dir) and not os.access(dev_dir, os.W_OK)):
        raise UserError(f"--out {args.out}: {dev_dir} is not writable")
    return dev_dir


def pick_tta_targets(items: list[str]) -> dict[str, float]:
    try:
        return parse_targets(items)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def pick_serve(args: RunConfig) -> dict[str, Any]:
    """The serve phase's --scenarios and --server-latency-ms as BenchContext fields."""
    scenarios = list(SERVE_SCENARIOS) if args.scenarios is None else \
        choose("--scenarios", args.scenarios, SERVE_SCENARIOS, "scenario")
    bound = args.server_latency_ms
    if bound is not None and not (bound > 0 and bound != float("inf")):
        raise UserError(f"--server-latency-ms must be a positive number of milliseconds, not {bound:g}")
    return {"serve_scenarios": [s for s in SERVE_SCENARIOS if s in scenarios], "server_latency_ms": bound}


def make_context(args: RunConfig, phases: Mapping[str, Phase]) -> tuple[BenchContext, dict[str, Any]]:
    """(the run's context, what the default plan left out and why). UserError on the first bad choice."""
    device = pick_device(args.device)
    models, rejected = pick_models(args.models, getattr(args, "imports", None))
    picked_phases = pick_phases(args.phases, phases, args.quick)
    backends, skipped_backends = pick_backends(args.backends, device, args.quick)
    precisions, skipped_precisions = pick_precisions(args.precisions, device, args.quick)
    ctx = BenchContext(device=device, quick=args.quick, data_root=args.data_root or "data", synthetic=args.synthetic,
                       checkpoints=args.checkpoints or "runs", models=models, phases=picked_phases,
                       backends=backends, batch_sizes=pick_batch_sizes(args.batch_sizes), precisions=precisions,
                       train_variants=pick_variants(args.train_variants, args.quick),
                       max_procs=pick_max_procs(args.max_procs, device),
                       threads=positive("--threads", args.threads) or torch.get_num_threads(),
                       budget_s=pick_budget(args.budget, args.quick), debug=args.debug,
                       tta_targets=pick_tta_targets(args.tta_target), **pick_serve(args),
                       precision_pct=pick_precision(getattr(args, "precision", None)))
    for name in models:  # real or synthetic, decided once for the whole run (every phase reads the same answer)
        ctx.uses_real_data(name)
    ctx.profile = profile_request(args, ctx, BACKENDS)
    ctx.out_dir = check_folders(args, device)
    return ctx, {"skipped_precisions": skipped_precisions, "skipped_backends": skipped_backends,
                 "rejected_models": rejected}
