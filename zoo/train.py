"""The one training loop every zoo model shares: ``python -m zoo.train --model NAME``.

Per epoch: train, evaluate on the test split, append a line to ``OUT/NAME/metrics.jsonl``, write TensorBoard scalars
to ``OUT/NAME/tb/``, save ``OUT/NAME/last.pt`` (and ``best.pt`` on a new best test accuracy) atomically.
``--resume`` continues from ``last.pt`` bit-exactly on CPU: the data order is a function of (seed, epoch) and the RNG
states are restored. Under ``torchrun`` the same command trains with DistributedDataParallel; rank 0 writes the files.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torchvision
from torch import nn

import zoo
from zoo.checkpoint import FORMAT, CheckpointError, atomic_write_text, load_checkpoint, save_checkpoint
from zoo.data import LOADERS, make_loaders
from zoo.engine import (
    PRECISIONS,
    StepOptions,
    StepStats,
    build_optimizer,
    evaluate,
    resolve_device,
    synchronize,
    train_step,
)
from zoo.errors import UserError
from zoo.models.pretrained import MODES as PRETRAINED_MODES

log = logging.getLogger("zoo")

# Settings a resumed run takes from its checkpoint: changing them mid-run would break exact resumption.
RESUME_KEYS = ("seed", "loader", "batch_size", "lr", "precision", "synthetic", "train_samples", "test_samples")


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
    pretrained: str = "auto"
    weights: str | None = None
    train_samples: int | None = None
    test_samples: int | None = None
    log_every: int = 50
    progress: bool | None = None  # None: a progress bar when stderr is a terminal


def _validate(cfg: TrainConfig) -> None:
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
    if cfg.resume and cfg.overwrite:
        raise UserError("--resume and --overwrite contradict each other")


# ---------------------------------------------------------------------------------------------------------------
# Distributed: torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; nothing else changes for the user.


def _init_distributed(device: torch.device) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def _all_reduce(values: list[float], device: torch.device) -> list[float]:
    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device if device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return t.tolist()


# ---------------------------------------------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    # str(): torch.__version__ is a TorchVersion, which a weights_only load refuses.
    return {"torch": str(torch.__version__), "torchvision": str(torchvision.__version__), "zoo": str(zoo.__version__)}


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _trim_metrics(path: str, done_epochs: int) -> None:
    """Drop metric lines of epochs the checkpoint does not hold (a run killed between the two writes)."""
    if not os.path.exists(path):
        return
    kept = []
    with open(path) as f:
        for line in f:
            try:
                if json.loads(line)["epoch"] <= done_epochs:
                    kept.append(line if line.endswith("\n") else line + "\n")
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line
    atomic_write_text(path, "".join(kept))


def _remove_stale_temporaries(run_dir: str) -> None:
    """Temporary files of saves that a SIGKILL interrupted (the targets themselves are intact)."""
    for name in os.listdir(run_dir):
        if name.startswith((".last.pt.", ".best.pt.", ".metrics.jsonl.")) and name.endswith(".tmp"):
            with contextlib.suppress(OSError):
                os.remove(os.path.join(run_dir, name))


def _append_line(path: str, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def fit(cfg: TrainConfig) -> dict[str, Any]:
    """Train one model per ``cfg``; returns the last epoch's metrics (plus paths). Raises UserError on bad input."""
    _validate(cfg)
    spec = zoo.get_spec(cfg.model)
    device = resolve_device(cfg.device)
    rank, world, device = _init_distributed(device)
    is_main = rank == 0
    run_dir = os.path.join(cfg.out, cfg.model)
    last_path, best_path = os.path.join(run_dir, "last.pt"), os.path.join(run_dir, "best.pt")
    metrics_path = os.path.join(run_dir, "metrics.jsonl")

    ckpt = None
    if cfg.resume:
        if not os.path.exists(last_path):
            raise UserError(f"--resume: no checkpoint at {last_path}; run without --resume to start")
        ckpt = load_checkpoint(last_path, map_location="cpu", model_name=cfg.model)
        saved = ckpt.get("config", {})
        for key in RESUME_KEYS:
            if key in saved and getattr(cfg, key) != saved[key] and getattr(cfg, key) is not None \
                    and getattr(cfg, key) != getattr(TrainConfig(cfg.model), key):
                raise UserError(f"--{key.replace('_', '-')} {getattr(cfg, key)} differs from the checkpoint's "
                                f"{saved[key]}; a resumed run keeps its settings")
            if key in saved:
                setattr(cfg, key, saved[key])
    elif os.path.exists(last_path) and not cfg.overwrite:
        raise UserError(f"{last_path} exists; pass --resume to continue it or --overwrite to start again")

    epochs = cfg.epochs or spec.recipe.epochs
    start_epoch = ckpt["epoch"] if ckpt else 0
    if start_epoch >= epochs:
        msg = f"{cfg.model}: {start_epoch} epochs already done in {last_path}; nothing to do (ask for more with --epochs)"
        print(msg, file=sys.stderr)
        return {"epoch": start_epoch, "nothing_to_do": True, "last": last_path}

    torch.manual_seed(cfg.seed)
    build_kwargs = {}
    if spec.uses_pretrained:
        if cfg.pretrained not in PRETRAINED_MODES:
            raise UserError(f"--pretrained must be one of {', '.join(PRETRAINED_MODES)}")
        # Resumed runs take every weight from the checkpoint: no need to look for ImageNet files.
        build_kwargs = {"pretrained": "off" if ckpt else cfg.pretrained, "weights_path": cfg.weights,
                        "download": cfg.download}
    model = zoo.get_model(cfg.model, **build_kwargs)
    pretrained = bool(ckpt["pretrained"]) if ckpt else bool(getattr(model, "pretrained", False))
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(spec.recipe, model, cfg.lr)
    opts = StepOptions(device, cfg.precision, cfg.channels_last)
    best_acc = -1.0
    if ckpt:
        try:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            if opts.scaler is not None and ckpt.get("scaler"):
                opts.scaler.load_state_dict(ckpt["scaler"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{last_path} does not fit {cfg.model}: {str(exc).strip().splitlines()[0][:200]}") from None
        _set_rng_state(ckpt["rng"], device)
        best_acc = ckpt["best_acc"]

    # The batch size is the recipe's global batch: under DDP each rank takes batch/world of the same seeded
    # permutation, so step i sees exactly the samples of single-process step i and the averaged gradient is the
    # same update: torchrun reproduces the tutorial's optimisation instead of changing its batch and step count.
    global_batch = cfg.batch_size or spec.recipe.batch_size
    if global_batch % world:
        raise UserError(f"batch size {global_batch} does not split evenly over {world} processes; pass a "
                        f"--batch-size divisible by {world}")
    data = make_loaders(spec, loader=cfg.loader, device=device, root=cfg.data_root, synthetic=cfg.synthetic,
                        download=cfg.download and is_main, batch_size=global_batch // world, seed=cfg.seed,
                        train_samples=cfg.train_samples, test_samples=cfg.test_samples, rank=rank, world_size=world)
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net, mode=None if cfg.compile == "default" else cfg.compile)

    writer = None
    if is_main:
        os.makedirs(run_dir, exist_ok=True)
        _remove_stale_temporaries(run_dir)
        if ckpt:
            _trim_metrics(metrics_path, start_epoch)
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(os.path.join(run_dir, "tb"), purge_step=start_epoch + 1 if ckpt else None)
        total, trainable = zoo.count_parameters(model)
        log.info("%s: %s | %s data, %d train / %d test | %s loader, batch %d, %s lr %g | %s | params %s (%s trainable)"
                 " | pretrained: %s%s", cfg.model, spec.source, data.source, data.train_size, data.test_size,
                 cfg.loader, cfg.batch_size or spec.recipe.batch_size,
                 spec.recipe.optimizer, cfg.lr or spec.recipe.lr, device, f"{total:,}", f"{trainable:,}",
                 str(pretrained).lower(), f" | resuming after epoch {start_epoch}" if ckpt else "")

    from tqdm.auto import tqdm

    show = (sys.stderr.isatty() if cfg.progress is None else cfg.progress) and is_main
    record: dict[str, Any] = {}
    for epoch in range(start_epoch, epochs):
        net.train()
        stats = StepStats(device)
        bar = tqdm(total=len(data.train), desc=f"{cfg.model} {epoch + 1}/{epochs}", disable=not show, leave=False,
                   unit="step", dynamic_ncols=True)
        synchronize(device)
        t0 = time.perf_counter()
        step = -1
        for step, (x, y) in enumerate(data.train.batches(epoch)):
            train_step(net, optimizer, x, y, opts, stats)
            if (step + 1) % cfg.log_every == 0:  # the only host syncs of the hot loop
                _check_and_show(stats, bar, epoch, step, t0, writer, epoch * len(data.train) + step)
            bar.update(1)
        synchronize(device)
        train_seconds = time.perf_counter() - t0
        bar.close()
        now = _check_and_show(stats, None, epoch, step, t0, None, 0)
        loss_sum, correct, samples = _all_reduce([now["loss_sum"], now["correct"], now["samples"]], device)
        train_seconds = max(_all_reduce([train_seconds], device)[0] / world, 1e-9)
        test = evaluate(net, data.test.batches(0), opts)
        record = {
            "epoch": epoch + 1, "train_loss": loss_sum / samples, "train_acc": correct / samples,
            "test_loss": test["loss"], "test_acc": test["acc"], "samples_per_s": samples / train_seconds,
            "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - t0, "train_seconds": train_seconds,
            "world_size": world, "loader": cfg.loader, "device": str(device), "data": data.source,
            "pretrained": pretrained,
        }
        if not is_main:
            continue
        is_best = record["test_acc"] > best_acc
        best_acc = max(best_acc, record["test_acc"])
        for key in ("train_loss", "train_acc", "test_loss", "test_acc", "samples_per_s", "lr"):
            writer.add_scalar(key.replace("_", "/", 1) if key.startswith(("train_", "test_")) else key, record[key],
                              epoch + 1)
        writer.flush()
        state = {
            "format": FORMAT, "model_name": cfg.model, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scaler": opts.scaler.state_dict() if opts.scaler is not None else None, "epoch": epoch + 1,
            "best_acc": best_acc, "test_acc": record["test_acc"], "rng": _rng_state(device),
            "recipe": spec.as_dict(), "config": {k: getattr(cfg, k) for k in RESUME_KEYS},
            "pretrained": pretrained, "data": data.source, "versions": _versions(), "world_size": world,
        }
        # Before last.pt: a resume trims lines the checkpoint lacks. A fresh (--overwrite) run replaces the old log
        # only with its first good epoch, so a run that fails early leaves the kept checkpoint's log alone.
        if epoch == start_epoch and not ckpt:
            atomic_write_text(metrics_path, json.dumps(record) + "\n")
        else:
            _append_line(metrics_path, record)
        save_checkpoint(state, last_path)
        if is_best:
            save_checkpoint(state, best_path)
        print(f"{cfg.model} epoch {epoch + 1}/{epochs}: train loss {record['train_loss']:.4f} acc "
              f"{record['train_acc']:.4f} | test loss {record['test_loss']:.4f} acc {record['test_acc']:.4f} | "
              f"{record['samples_per_s']:,.0f} samples/s{' | best' if is_best else ''}", flush=True)
    if writer is not None:
        writer.close()
    record.update({"last": last_path, "best": best_path, "run_dir": run_dir})
    return record


def _check_and_show(stats: StepStats, bar, epoch: int, step: int, t0: float, writer, global_step: int) -> dict:
    now = stats.read()
    if now["finite_steps"] <= step:
        raise NonFiniteLoss(f"non-finite loss at epoch {epoch + 1}, step {now['finite_steps'] + 1}: stopping; "
                            f"the last good checkpoint is kept (try a lower --lr)")
    if bar is not None:
        bar.set_postfix(loss=f"{now['loss']:.4f}", samples_s=f"{now['samples'] / (time.perf_counter() - t0):,.0f}")
    if writer is not None:
        writer.add_scalar("train/loss_running", now["loss"], global_step)
    return now


# ---------------------------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m zoo.train",
        description="Train a zoo model with its tutorial's recipe through the shared loop. Flags left out take the "
                    "recipe's values (see --list).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", help="model to train (see --list)")
    p.add_argument("--all", action="store_true", help="train every zoo model in turn")
    p.add_argument("--list", action="store_true", help="list the models with their recipes and exit")
    p.add_argument("--epochs", type=int, help="total epochs to reach (default: the recipe's)")
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data-root", default="data", help="folder with the torchvision datasets")
    src.add_argument("--synthetic", action="store_true", help="deterministic synthetic data of the same shapes (offline)")
    p.add_argument("--download", action="store_true", help="download the dataset (and ImageNet weights) if missing")
    p.add_argument("--out", default="runs", help="output folder: OUT/MODEL/{last.pt,best.pt,metrics.jsonl,tb/}")
    p.add_argument("--seed", type=int, default=0, help="seed for initialisation and the per-epoch data order")
    p.add_argument("--resume", action="store_true", help="continue from OUT/MODEL/last.pt")
    p.add_argument("--overwrite", action="store_true", help="start again even if OUT/MODEL/last.pt exists")
    p.add_argument("--loader", choices=LOADERS, default="fast",
                   help="fast: data resident on the device, batched transforms; tutorial: Dataset + DataLoader")
    p.add_argument("--batch-size", type=int, help="training batch size (default: the recipe's)")
    p.add_argument("--lr", type=float, help="learning rate (default: the recipe's)")
    p.add_argument("--precision", choices=list(PRECISIONS), default="fp32",
                   help="autocast precision; fp16 adds a GradScaler")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format for model and inputs")
    p.add_argument("--compile", nargs="?", const="default", default=None, metavar="MODE",
                   help="torch.compile the model (MODE: default, reduce-overhead, max-autotune)")
    p.add_argument("--pretrained", choices=PRETRAINED_MODES, default="auto",
                   help="ImageNet weights for the AlexNet models: auto (use if found), require, off")
    p.add_argument("--weights", help="path to torchvision's alexnet-owt-7be5be79.pth (instead of the torch hub cache)")
    p.add_argument("--train-samples", type=int, help="use only the first N training samples")
    p.add_argument("--test-samples", type=int, help="use only the first N test samples")
    p.add_argument("--log-every", type=int, default=50, help="steps between host syncs for the progress bar")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _list_models() -> str:
    from tabulate import tabulate

    rows = []
    for name in zoo.list_models():
        s = zoo.get_spec(name)
        r = s.recipe
        rows.append([name, s.dataset, "x".join(map(str, s.input_shape)), r.optimizer,
                     f"{r.lr:g}" + (f" m{r.momentum:g}" if r.momentum else ""), r.batch_size, r.epochs,
                     r.transforms.describe(), s.source])
    return tabulate(rows, headers=["model", "dataset", "input", "opt", "lr", "batch", "epochs", "transforms", "source"])


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    args = build_parser().parse_args(argv)
    if args.list:
        print(_list_models())
        return 0
    if not args.model and not args.all:
        print("error: give --model NAME or --all (choices: " + ", ".join(zoo.list_models()) + ")", file=sys.stderr)
        return 2
    names = zoo.list_models() if args.all else [args.model]
    try:
        for name in names:
            cfg = TrainConfig(
                model=name, epochs=args.epochs, device=args.device, data_root=args.data_root,
                synthetic=args.synthetic, download=args.download, out=args.out, seed=args.seed, resume=args.resume,
                overwrite=args.overwrite, loader=args.loader, batch_size=args.batch_size, lr=args.lr,
                precision=args.precision, channels_last=args.channels_last, compile=args.compile,
                pretrained=args.pretrained, weights=args.weights, train_samples=args.train_samples,
                test_samples=args.test_samples, log_every=args.log_every,
                progress=False if args.no_progress else None)
            fit(cfg)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted: the last completed epoch is safe in last.pt; continue with --resume", file=sys.stderr)
        return 130
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
