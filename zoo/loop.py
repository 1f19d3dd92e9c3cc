"""The one training loop every zoo model shares (``fit``); ``python -m zoo.train`` is its command line.

Per epoch: train, evaluate on the test split, append a line to ``OUT/NAME/metrics.jsonl``, write TensorBoard scalars
to ``OUT/NAME/tb/``, save ``OUT/NAME/last.pt`` (and ``best.pt`` on a new best test accuracy) atomically.
``--resume`` continues from ``last.pt`` bit-exactly on CPU: the data order is a function of (seed, epoch) and the RNG
states are restored. Under ``torchrun`` the same command trains with DistributedDataParallel; rank 0 writes the files.

Read ``fit`` top to bottom: ``start_run`` (validation and the resume checkpoint, before any process group),
``prepare_run`` (data, tuned model and optimizer, DDP, compile, writer), then per epoch ``train_one_epoch``,
``evaluate``, ``save_epoch``.

Tests only: ``ZOO_FAULT_AT=<point>[:<epoch>]`` SIGKILLs the process at a named point of ``save_epoch``
(``after_metrics_append``, ``mid_checkpoint_write``, ``after_rename``; see ``zoo.faults``).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import torch
import torchvision
from torch import nn

import zoo
from zoo import distributed
from zoo.atomic import atomic_write_text
from zoo.checkpoint import CheckpointError, CheckpointState, load_checkpoint, save_checkpoint
from zoo.data import LOADERS, DataBundle, make_loaders
from zoo.engine import (
    PRECISIONS,
    StepOptions,
    StepStats,
    evaluate,
    resolve_device,
    synchronize,
    train_step,
)
from zoo.errors import UserError
from zoo.faults import maybe_crash
from zoo.models.pretrained import MODES as PRETRAINED_MODES
from zoo.registry import ModelSpec
from zoo.runfiles import RunPaths, append_line, remove_stale_temporaries, trim_metrics
from zoo.tune import (
    TUNE_MODES,
    TuneChoice,
    apply_compile,
    autotune,
    build_tuned,
    default_candidate,
    eager_candidates,
    untuned,
)

log = logging.getLogger("zoo")

# Settings a resumed run takes from its checkpoint: changing them mid-run would break exact resumption.
RESUME_KEYS = ("seed", "loader", "batch_size", "lr", "precision", "synthetic", "train_samples", "test_samples",
               "tune", "shuffle")
# What a checkpoint's "config" records: the resume keys, and the execution options that may change on resume.
RECORDED_KEYS = (*RESUME_KEYS, "channels_last", "compile")


class NonFiniteLoss(UserError):
    exit_code = 3


@dataclass
class TrainConfig:
    model: str
    epochs: int | None = None  # None: the recipe's
    device: str = "auto"
    data_root: str = "data"
    synthetic: bool = False
    download: bool = False
    out: str = "runs"
    seed: int = 0
    resume: bool = False
    overwrite: bool = False
    loader: str = "fast"
    batch_size: int | None = None
    lr: float | None = None
    precision: str = "fp32"
    channels_last: bool = False
    compile: str | None = None  # a torch.compile mode ("default", "reduce-overhead", "max-autotune") or None
    tune: str = "auto"  # "auto": zoo.tune probes the execution options before training; "off": the defaults
    pretrained: str = "auto"
    weights: str | None = None
    train_samples: int | None = None
    test_samples: int | None = None
    log_every: int = 50
    shuffle: bool | None = None  # None/True: a seeded permutation per epoch; False: the split's order (quickstart)
    progress: bool | None = None  # None: a progress bar when stderr is a terminal


@dataclass
class Run:
    """One run being trained: its settings, where its files go, and the objects ``prepare_run`` builds."""

    cfg: TrainConfig
    spec: ModelSpec
    paths: RunPaths
    device: torch.device
    ckpt: dict[str, Any] | None  # the resume checkpoint, or None for a fresh run
    start_epoch: int
    epochs: int
    rank: int = 0
    world: int = 1
    pretrained: bool = False
    best_acc: float = -1.0
    model: nn.Module | None = None  # the plain model (what is saved)
    net: nn.Module | None = None  # what trains: the model, DDP-wrapped and/or compiled
    optimizer: torch.optim.Optimizer | None = None
    opts: StepOptions | None = None
    data: DataBundle | None = None
    writer: Any = None  # a SummaryWriter on rank 0
    tune: TuneChoice | None = None  # how the step runs: memory format, optimizer kernel, compile

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def validate_config(cfg: TrainConfig) -> None:
    """Every check of the user's settings that needs no file: a UserError names the flag."""
    zoo.get_spec(cfg.model)  # unknown model -> UnknownModelError, a UserError at the CLI
    for name in ("epochs", "batch_size", "train_samples", "test_samples", "log_every"):
        value = getattr(cfg, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be a positive integer, not {value}")
    if cfg.lr is not None and not (math.isfinite(cfg.lr) and cfg.lr > 0):
        raise UserError(f"--lr must be a positive number, not {cfg.lr}")
    if cfg.loader not in LOADERS:
        raise UserError(f"unknown loader {cfg.loader!r}; choose from: {', '.join(LOADERS)}")
    if cfg.precision not in PRECISIONS:
        raise UserError(f"unknown precision {cfg.precision!r}; choose from: {', '.join(PRECISIONS)}")
    if cfg.tune not in TUNE_MODES:
        raise UserError(f"unknown --tune {cfg.tune!r}; choose from: {', '.join(TUNE_MODES)}")
    if cfg.resume and cfg.overwrite:
        raise UserError("--resume and --overwrite contradict each other")
    if zoo.get_spec(cfg.model).uses_pretrained and cfg.pretrained not in PRETRAINED_MODES:
        raise UserError(f"--pretrained must be one of {', '.join(PRETRAINED_MODES)}")


def resume_checkpoint(cfg: TrainConfig, paths: RunPaths) -> dict[str, Any] | None:
    """The checkpoint ``--resume`` continues (its settings copied into ``cfg``), or None for a fresh run."""
    if not cfg.resume:
        if os.path.exists(paths.last) and not cfg.overwrite:
            raise UserError(f"{paths.last} exists; pass --resume to continue it or --overwrite to start again")
        return None
    if not os.path.exists(paths.last):
        raise UserError(f"--resume: no checkpoint at {paths.last}; run without --resume to start")
    ckpt = load_checkpoint(paths.last, map_location="cpu", model_name=cfg.model)
    saved, default = ckpt.get("config", {}), TrainConfig(cfg.model)
    for key in RESUME_KEYS:
        asked = getattr(cfg, key)
        if key in saved and asked != saved[key] and asked is not None and asked != getattr(default, key):
            raise UserError(f"--{key.replace('_', '-')} {asked} differs from the checkpoint's {saved[key]}; a "
                            f"resumed run keeps its settings")
        if key in saved:
            setattr(cfg, key, saved[key])
    return ckpt


def start_run(cfg: TrainConfig) -> Run:
    """Validate ``cfg`` and find where the run starts. Every user error is raised here, before torchrun's ranks
    join a process group (a rank that fails after joining leaves the others waiting in a collective)."""
    validate_config(cfg)
    spec = zoo.get_spec(cfg.model)
    device = resolve_device(cfg.device)
    paths = RunPaths.of(cfg.out, cfg.model)
    ckpt = resume_checkpoint(cfg, paths)
    # The batch size is the recipe's global batch: under DDP each rank takes batch/world of the same seeded
    # permutation, so step i sees exactly the samples of single-process step i and the averaged gradient is the
    # same update: torchrun reproduces the tutorial's optimisation instead of changing its batch and step count.
    world = distributed.env_world_size()
    if (cfg.batch_size or spec.recipe.batch_size) % world:
        raise UserError(f"batch size {cfg.batch_size or spec.recipe.batch_size} does not split evenly over {world} "
                        f"processes; pass a --batch-size divisible by {world}")
    return Run(cfg, spec, paths, device, ckpt, start_epoch=ckpt["epoch"] if ckpt else 0,
               epochs=cfg.epochs or spec.recipe.epochs)


def build_model(run: Run) -> None:
    """Model, optimizer and step options, from the seed, then from the resume checkpoint when there is one."""
    cfg, ckpt = run.cfg, run.ckpt
    torch.manual_seed(cfg.seed)
    build_kwargs = {}
    if run.spec.uses_pretrained:
        # Resumed runs take every weight from the checkpoint: no need to look for ImageNet files.
        build_kwargs = {"pretrained": "off" if ckpt else cfg.pretrained, "weights_path": cfg.weights,
                        "download": cfg.download}
    model = zoo.get_model(cfg.model, **build_kwargs)
    run.pretrained = bool(ckpt["pretrained"]) if ckpt else bool(getattr(model, "pretrained", False))
    model.to(run.device)
    run.tune = choose_execution(run, model)
    eager = dataclasses.replace(run.tune, compile=None)  # compiled in prepare_run, after the DDP wrap
    _, run.optimizer, run.opts = build_tuned(eager, model, run.spec.recipe, run.device, lr=cfg.lr,
                                             precision=cfg.precision)
    run.model = model
    if ckpt:
        try:
            model.load_state_dict(ckpt["model"])
            run.optimizer.load_state_dict(ckpt["optimizer"])
            if run.opts.scaler is not None and ckpt.get("scaler"):
                run.opts.scaler.load_state_dict(ckpt["scaler"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{run.paths.last} does not fit {cfg.model}: "
                                  f"{str(exc).strip().splitlines()[0][:200]}") from None
        set_rng_state(ckpt["rng"], run.device)
        run.best_acc = ckpt["best_acc"]


def choose_execution(run: Run, model: nn.Module) -> TuneChoice:
    """--resume: the checkpoint's choice; --tune off (and DDP, whose ranks must agree): the defaults; --tune auto:
    the tuner's, probed on one training batch. Explicit --channels-last / --compile are kept (never probed)."""
    cfg, recipe, device = run.cfg, run.spec.recipe, run.device
    pins = {k: v for k, v in (("channels_last", cfg.channels_last), ("compile", cfg.compile)) if v}
    choice, how = untuned(model, recipe, device), "off" if cfg.tune == "off" else "off under DDP (one choice per run)"
    if run.ckpt is not None:
        saved = run.ckpt.get("tune")
        choice, how = (TuneChoice.from_dict(saved) if saved else choice), "reused from the checkpoint"
    elif cfg.tune == "auto" and run.world == 1:
        with torch.random.fork_rng(devices=[]):  # a DataLoader iterator draws a seed: leave the run's RNG alone
            x, y = next(iter(run.data.train.batches(0)))
        ref = dataclasses.replace(default_candidate(model, recipe, device), channels_last=cfg.channels_last)
        cands = [c for c in eager_candidates(model, recipe, x, device) if c.channels_last or not cfg.channels_last]
        choice = autotune(model, recipe, x, y, device, precision=cfg.precision, candidates=cands,
                          steps_planned=(run.epochs - run.start_epoch) * len(run.data.train), reference=ref,
                          probe_compile=not cfg.compile)
        how = f"{choice.gain:.2f}x the untuned {ref.label}" if choice.measured else "run too short to probe"
    choice = dataclasses.replace(choice, **pins)
    log.info("%s: tune %s: %s%s", cfg.model, choice.label, how, "".join(
        f" | {k} {v:,.0f} samples/s" for k, v in choice.measured.items()))
    return choice


def prepare_run(run: Run) -> None:
    """Join the process group (under torchrun), build model and data, wrap for DDP / compile, open the writer."""
    cfg = run.cfg
    run.rank, run.world, run.device = distributed.init_distributed(run.device)
    global_batch = cfg.batch_size or run.spec.recipe.batch_size
    run.data = make_loaders(run.spec, loader=cfg.loader, device=run.device, root=cfg.data_root,
                            synthetic=cfg.synthetic, download=cfg.download and run.is_main, shuffle=cfg.shuffle,
                            batch_size=global_batch // run.world, seed=cfg.seed, train_samples=cfg.train_samples,
                            test_samples=cfg.test_samples, rank=run.rank, world_size=run.world)
    build_model(run)  # after the data: the tuner probes on one batch of it
    run.net = apply_compile(distributed.wrap_ddp(run.model, run.device, run.world), run.tune.compile)
    if run.is_main:
        os.makedirs(run.paths.run_dir, exist_ok=True)
        remove_stale_temporaries(run.paths.run_dir)
        if run.ckpt:
            trim_metrics(run.paths.metrics, run.start_epoch)
        from torch.utils.tensorboard import SummaryWriter

        run.writer = SummaryWriter(os.path.join(run.paths.run_dir, "tb"),
                                   purge_step=run.start_epoch + 1 if run.ckpt else None)
        log_start(run)


def log_start(run: Run) -> None:
    cfg, spec, data = run.cfg, run.spec, run.data
    total, trainable = zoo.count_parameters(run.model)
    log.info("%s: %s | %s data, %d train / %d test | %s loader, batch %d, %s lr %g | %s | params %s (%s trainable)"
             " | pretrained: %s%s", cfg.model, spec.source, data.source, data.train_size, data.test_size,
             cfg.loader, cfg.batch_size or spec.recipe.batch_size, spec.recipe.optimizer, cfg.lr or spec.recipe.lr,
             run.device, f"{total:,}", f"{trainable:,}", str(run.pretrained).lower(),
             f" | resuming after epoch {run.start_epoch}" if run.ckpt else "")


def train_one_epoch(run: Run, epoch: int) -> dict[str, Any]:
    """One pass over the training split; the sums are all-reduced over ranks. Host syncs once per log_every."""
    from tqdm.auto import tqdm

    cfg, data, device = run.cfg, run.data, run.device
    show = (sys.stderr.isatty() if cfg.progress is None else cfg.progress) and run.is_main
    run.net.train()
    stats = StepStats(device)
    bar = tqdm(total=len(data.train), desc=f"{cfg.model} {epoch + 1}/{run.epochs}", disable=not show, leave=False,
               unit="step", dynamic_ncols=True)
    synchronize(device)
    started = time.perf_counter()
    step = -1
    for step, (x, y) in enumerate(data.train.batches(epoch)):
        train_step(run.net, run.optimizer, x, y, run.opts, stats)
        if (step + 1) % cfg.log_every == 0:  # the only host syncs of the hot loop
            check_and_show(stats, bar, epoch, step, started, run.writer, epoch * len(data.train) + step)
        bar.update(1)
    synchronize(device)
    train_seconds = time.perf_counter() - started
    bar.close()
    now = check_and_show(stats, None, epoch, step, started, None, 0)
    loss_sum, correct, samples = distributed.all_reduce([now["loss_sum"], now["correct"], now["samples"]], device)
    train_seconds = max(distributed.all_reduce([train_seconds], device)[0] / run.world, 1e-9)
    return {"train_loss": loss_sum / samples, "train_acc": correct / samples, "samples_per_s": samples / train_seconds,
            "train_seconds": train_seconds, "started": started}


def check_and_show(stats: StepStats, bar, epoch: int, step: int, started: float, writer, global_step: int) -> dict:
    """Read the running sums (one host sync); stop on a non-finite loss; update the bar and the running curve."""
    now = stats.read()
    if now["finite_steps"] <= step:
        raise NonFiniteLoss(f"non-finite loss at epoch {epoch + 1}, step {now['finite_steps'] + 1}: stopping; "
                            f"the last good checkpoint is kept (try a lower --lr)")
    if bar is not None:
        bar.set_postfix(loss=f"{now['loss']:.4f}",
                        samples_s=f"{now['samples'] / (time.perf_counter() - started):,.0f}")
    if writer is not None:
        writer.add_scalar("train/loss_running", now["loss"], global_step)
    return now


def epoch_record(run: Run, epoch: int, train: dict[str, Any], test: dict[str, float]) -> dict[str, Any]:
    """The metrics line of one epoch (the fields metrics.jsonl has always had, in the same order)."""
    return {
        "epoch": epoch + 1, "train_loss": train["train_loss"], "train_acc": train["train_acc"],
        "test_loss": test["loss"], "test_acc": test["acc"], "samples_per_s": train["samples_per_s"],
        "lr": run.optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - train["started"],
        "train_seconds": train["train_seconds"], "world_size": run.world, "loader": run.cfg.loader,
        "device": str(run.device), "data": run.data.source, "pretrained": run.pretrained,
        "tune": run.tune.to_dict(),
    }


def save_epoch(run: Run, record: dict[str, Any]) -> None:
    """Rank 0: TensorBoard scalars, the metrics line, last.pt (and best.pt), then the console line."""
    epoch = record["epoch"]
    is_best = record["test_acc"] > run.best_acc
    run.best_acc = max(run.best_acc, record["test_acc"])
    for key in ("train_loss", "train_acc", "test_loss", "test_acc", "samples_per_s", "lr"):
        tag = key.replace("_", "/", 1) if key.startswith(("train_", "test_")) else key
        run.writer.add_scalar(tag, record[key], epoch)
    run.writer.flush()
    state = CheckpointState(
        model_name=run.cfg.model, model=run.model.state_dict(), optimizer=run.optimizer.state_dict(),
        scaler=run.opts.scaler.state_dict() if run.opts.scaler is not None else None, epoch=epoch,
        best_acc=run.best_acc, test_acc=record["test_acc"], rng=rng_state(run.device), recipe=run.spec.as_dict(),
        config={k: getattr(run.cfg, k) for k in RECORDED_KEYS}, pretrained=run.pretrained, data=run.data.source,
        versions=versions(), world_size=run.world, tune=run.tune.to_dict())
    # Before last.pt: a resume trims lines the checkpoint lacks. A fresh (--overwrite) run replaces the old log
    # only with its first good epoch, so a run that fails early leaves the kept checkpoint's log alone.
    if epoch == run.start_epoch + 1 and not run.ckpt:
        atomic_write_text(run.paths.metrics, json.dumps(record) + "\n")
    else:
        append_line(run.paths.metrics, record)
    maybe_crash("after_metrics_append", epoch)
    save_checkpoint(state, run.paths.last)
    maybe_crash("after_rename", epoch)
    if is_best:
        save_checkpoint(state, run.paths.best)
    print(f"{run.cfg.model} epoch {epoch}/{run.epochs}: train loss {record['train_loss']:.4f} acc "
          f"{record['train_acc']:.4f} | test loss {record['test_loss']:.4f} acc {record['test_acc']:.4f} | "
          f"{record['samples_per_s']:,.0f} samples/s{' | best' if is_best else ''}", flush=True)


def fit(cfg: TrainConfig) -> dict[str, Any]:
    """Train one model per ``cfg``; returns the last epoch's metrics (plus paths). Raises UserError on bad input."""
    run = start_run(cfg)
    if run.start_epoch >= run.epochs:
        print(f"{cfg.model}: {run.start_epoch} epochs already done in {run.paths.last}; nothing to do (ask for "
              f"more with --epochs)", file=sys.stderr)
        return {"epoch": run.start_epoch, "nothing_to_do": True, "last": run.paths.last}
    record: dict[str, Any] = {}
    try:
        prepare_run(run)
        for epoch in range(run.start_epoch, run.epochs):
            train = train_one_epoch(run, epoch)
            test = evaluate(run.net, run.data.test.batches(0), run.opts)
            record = epoch_record(run, epoch, train, test)
            if run.is_main:
                save_epoch(run, record)
    finally:
        if run.writer is not None:
            run.writer.close()
    record.update({"last": run.paths.last, "best": run.paths.best, "run_dir": run.paths.run_dir})
    return record


def versions() -> dict[str, str]:
    # str(): torch.__version__ is a TorchVersion, which a weights_only load refuses.
    return {"torch": str(torch.__version__), "torchvision": str(torchvision.__version__), "zoo": str(zoo.__version__)}


def rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
