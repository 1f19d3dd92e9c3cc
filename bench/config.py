"""RunConfig: every choice of one bench run, with its default, declared once.

``python -m bench.run`` parses its flags into a RunConfig (one field per flag, the same name) and calls the library;
``bench.launch(RunConfig(...))`` is the same run from Python. A field takes what a person would write: a list or the
command line's comma-separated text (``models=["mlp", "lenet"]`` or ``models="mlp,lenet"``); None means the default
that bench.plan derives for the device (its docstring and the flags' --help say which). bench.plan validates the
config into the run's BenchContext; a bad choice is a zoo.errors.UserError with the command line's one-line message.
"""
from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union

Choice = Union[str, Sequence[str], None]  # names, as a list or comma-separated text; None: the default


@dataclass(frozen=True)
class RunConfig:
    models: Choice = "all"  # registered models, or "all"; torchvision:NAME is any torchvision classifier
    imports: Sequence[str] = ()  # modules to import first: their register_model calls add models
    device: str = "auto"  # auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps
    phases: Choice = None  # default: every phase a full run includes (with quick: those a smoke run includes)
    backends: Choice = None  # NAME or NAME:PRECISION; default: the device's deployment backends
    batch_sizes: str | Sequence[int] | None = None  # default: 1 and each model's recipe batch
    precisions: Choice = None  # training precisions; default fp32 plus those the hardware runs natively
    train_variants: Choice = None  # channels_last, compile, compile=MODE, none; default channels_last,compile
    checkpoints: str | None = None  # folder of zoo.train runs; default runs/ when present, else random init
    data_root: str | None = None  # torchvision datasets; default data/ (absent datasets: synthetic, and said)
    synthetic: bool = False  # synthetic data only
    quick: bool = False  # a smoke run of every path (QUICK in every table)
    threads: int | None = None  # torch intra-op threads (default: torch's own)
    budget: float | str | None = None  # seconds start to exit, or "none"; default 520 (quick 120)
    precision: float | None = None  # headline ratios timed until their 95% interval is within +-PCT (default 5)
    tta_target: Sequence[str] = ()  # MODEL=ACC, the tta phase's accuracy to reach per model
    scenarios: Choice = None  # serve phase: LoadGen scenarios (default all four)
    server_latency_ms: float | None = None  # serve phase: the Server scenario's p99 bound
    max_procs: int | None = None  # scale phase: most processes
    out: str | None = None  # output root (results go to OUT/<device>/); None: no result files
    repeat: int | None = None  # fresh processes per phase, merged (default 1)
    debug: bool = False  # let measurement errors raise with a traceback
    profile: bool = False  # an op-level profile after each row's timed calls (bench.profile)
    profile_rows: Choice = None  # profile only these row keys (wildcards allowed; implies profile)

    def __post_init__(self):
        for f in dataclasses.fields(self):  # a list given from Python is kept as a tuple: the config stays immutable
            if isinstance(getattr(self, f.name), list):
                object.__setattr__(self, f.name, tuple(getattr(self, f.name)))

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> RunConfig:
        """The config of a parsed command line (argparse's dest names are the field names)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in vars(args).items() if k in names})

    def to_argv(self) -> list[str]:
        """The command line of this config (its non-default fields), for the fresh processes of --repeat."""
        argv: list[str] = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value == f.default or value is None or value is False:
                continue
            flag = "--" + f.name.replace("_", "-")
            if value is True:
                argv.append(flag)
            elif f.name in ("tta_target", "imports"):  # repeatable flags
                flag = "--import" if f.name == "imports" else flag
                argv += [item for target in value for item in (flag, target)]
            else:
                argv += [flag, value if isinstance(value, str) else
                         ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)]
        return argv

    def replace(self, **changes) -> RunConfig:
        return dataclasses.replace(self, **changes)
