"""``python -m zoo.train``: the command line of the shared training loop (``zoo.loop.fit``).

Bad input ends in one ``error: ...`` line and a non-zero exit; Ctrl-C exits 130 with the last completed epoch safe.
"""
from __future__ import annotations

import argparse
import logging
import sys

import zoo
from zoo import distributed
from zoo.data import LOADERS, real_data_available
from zoo.engine import PRECISIONS
from zoo.errors import UserError
from zoo.loop import NonFiniteLoss, TrainConfig, fit
from zoo.models.pretrained import MODES as PRETRAINED_MODES
from zoo.plugins import import_modules
from zoo.tune import TUNE_MODES
from zoo.validate import check_models

__all__ = ["NonFiniteLoss", "TrainConfig", "build_parser", "fit", "main"]  # the loop's names, re-exported


# ---------------------------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m zoo.train",
        description="Train a zoo model with its tutorial's recipe through the shared loop. Flags left out take the "
                    "recipe's values (see --list).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", help="model to train (see --list), or torchvision:NAME (any classifier of "
                                   "torchvision.models.list_models(module=torchvision.models))")
    p.add_argument("--import", dest="imports", action="append", metavar="MODULE",
                   help="import MODULE (repeatable, or comma-separated) before looking models up: its "
                        "register_model calls add models (installed packages add theirs through the entry point "
                        "group torch_zoo_bench.models)")
    p.add_argument("--all", action="store_true", help="train every zoo model in turn")
    p.add_argument("--list", action="store_true", help="list the models with their recipes and exit")
    p.add_argument("--epochs", type=int, help="total epochs to reach (default: the recipe's)")
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data-root", default="data",
                     help="folder with the torchvision datasets (ROOT/FashionMNIST/raw/...); Debian's IDX .gz files "
                          "go there with python -m zoo.data link-fashionmnist SRC --data-root ROOT")
    src.add_argument("--synthetic", action="store_true", help="deterministic synthetic data of the same shapes (offline)")
    p.add_argument("--download", action="store_true", help="download the dataset (and ImageNet weights) if missing")
    p.add_argument("--out", default="runs", help="output folder: OUT/MODEL/{last.pt,best.pt,metrics.jsonl,tb/}")
    p.add_argument("--seed", type=int, default=0, help="seed for initialisation and the per-epoch data order")
    p.add_argument("--resume", action="store_true", help="continue from OUT/MODEL/last.pt")
    p.add_argument("--overwrite", action="store_true", help="start again even if OUT/MODEL/last.pt exists")
    p.add_argument("--loader", choices=LOADERS, default="fast",
                   help="fast: data resident on the device, batched transforms; tutorial: Dataset + DataLoader")
    p.add_argument("--no-shuffle", action="store_true",
                   help="train on the split in its stored order every epoch, as the quickstart's DataLoader does "
                        "(default: a seeded permutation per epoch)")
    p.add_argument("--batch-size", type=int, help="training batch size (default: the recipe's)")
    p.add_argument("--lr", type=float, help="learning rate (default: the recipe's)")
    p.add_argument("--precision", choices=list(PRECISIONS), default="fp32",
                   help="autocast precision; fp16 adds a GradScaler")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format for model and inputs")
    p.add_argument("--compile", nargs="?", const="default", default=None, metavar="MODE",
                   help="torch.compile the model (MODE: default, reduce-overhead, max-autotune)")
    p.add_argument("--tune", choices=TUNE_MODES, default="auto",
                   help="auto: before training, time the step's execution options (memory format, optimizer "
                        "kernel, compile when the run can pay for it; fp32 maths and --precision unchanged) on "
                        "one batch and keep the fastest (a resumed run reuses its choice); off: the defaults")
    p.add_argument("--pretrained", choices=PRETRAINED_MODES, default="auto",
                   help="ImageNet weights for the AlexNet and torchvision:NAME models: auto (use if found), "
                        "require, off")
    p.add_argument("--weights", help="path to torchvision's weights file for the model (e.g. "
                                     "alexnet-owt-7be5be79.pth), instead of the torch hub cache")
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
    table = tabulate(rows, headers=["model", "dataset", "input", "opt", "lr", "batch", "epochs", "transforms", "source"])
    return table + "\nand torchvision:NAME, any classifier of torchvision.models.list_models(module=torchvision.models)"


def pick_models(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """(models to train, one error line per model that cannot): --import'ed modules first, then the names."""
    import_modules(args.imports or [])
    if not args.model and not args.all:
        raise UserError("give --model NAME or --all (choices: " + ", ".join(zoo.list_models()) + ")")
    if args.model:
        zoo.get_spec(args.model)  # an unknown name: one line naming the choices
    names, rejected = check_models(zoo.list_models() if args.all else [args.model])
    if not names:
        raise UserError(rejected[0])
    return names, rejected


def trains_on_synthetic(name: str, args: argparse.Namespace) -> bool:
    """Whether ``name`` trains on synthetic data: with --synthetic; or under --all (without --download) when its
    dataset is not under --data-root, said in one line, so one command trains the whole zoo on whatever real data is
    there (offline, CIFAR-10 has no copy: cifar_cnn is then trained and recorded as synthetic). A dataset folder
    that is there but broken stays an error; a single --model never falls back."""
    if args.synthetic:
        return True
    if not args.all or args.download:
        return False
    dataset = zoo.get_spec(name).dataset
    if real_data_available(dataset, args.data_root):
        return False
    logging.getLogger("zoo.train").warning(
        "%s: no %s under %s: trained on synthetic data of the same shapes (recorded as data: synthetic)",
        name, dataset, args.data_root)
    return True


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    args = build_parser().parse_args(argv)
    try:
        if args.list:
            import_modules(args.imports or [])
            print(_list_models())
            return 0
        names, rejected = pick_models(args)
        for line in rejected:  # said before the others train, and again by the exit status
            print(f"error: {line}", file=sys.stderr)
        for name in names:
            fit(train_config(args, name))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted: the last completed epoch is safe in last.pt; continue with --resume", file=sys.stderr)
        return 130
    finally:
        distributed.destroy()
    return 2 if rejected else 0


def train_config(args: argparse.Namespace, name: str) -> TrainConfig:
    return TrainConfig(
        model=name, epochs=args.epochs, device=args.device, data_root=args.data_root,
        synthetic=trains_on_synthetic(name, args), download=args.download, out=args.out, seed=args.seed,
        resume=args.resume,
        overwrite=args.overwrite, loader=args.loader, batch_size=args.batch_size, lr=args.lr,
        precision=args.precision, channels_last=args.channels_last, compile=args.compile, tune=args.tune,
        pretrained=args.pretrained, weights=args.weights, train_samples=args.train_samples,
        test_samples=args.test_samples, log_every=args.log_every, shuffle=False if args.no_shuffle else None,
        progress=False if args.no_progress else None)


if __name__ == "__main__":
    sys.exit(main())
