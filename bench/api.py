"""The Python entry point: ``bench.run_bench(models=["lenet"], phases=["infer"], backends=["eager"])`` runs the same
driver as ``python -m bench.run`` from a notebook or a script and returns its typed records (bench.records).

Every keyword is the command-line flag of the same name (``batch_sizes`` is ``--batch-sizes``; a list is joined with
commas; True is a bare flag). Files are written only when ``out`` is given (the run is made in a temporary folder
otherwise, and nothing is left behind). A bad choice raises zoo.errors.UserError with the command line's one-line
message; an interrupted or failed run raises RuntimeError naming its exit status.
"""
from __future__ import annotations

import os
import shlex
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from bench.records import Record
from zoo.errors import UserError


def to_argv(**flags: Any) -> list[str]:
    """``--name value`` for every keyword that is not None (lists joined with commas, True a bare flag)."""
    argv: list[str] = []
    for name, value in flags.items():
        if value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        if value is True:
            argv.append(flag)
        else:
            text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
            argv += [flag, text]
    return argv


def run_bench(*, models: Sequence[str] | str = "all", device: str = "auto", phases: Sequence[str] | None = None,
              backends: Sequence[str] | None = None, batch_sizes: Sequence[int] | None = None,
              budget: float | str | None = None, threads: int | None = None, quick: bool = False,
              out: str | None = None, **flags: Any) -> list[Record]:
    """The records of one bench run (see the module docstring); ``flags``: any other bench.run flag."""
    from bench.measure.machine import intra_op_threads
    from bench.phases import PHASES
    from bench.plan import make_context
    from bench.report.load import load_results
    from bench.run import build_parser
    from bench.run import run_bench as drive

    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        argv = to_argv(models=models, device=device, phases=phases, backends=backends, batch_sizes=batch_sizes,
                       budget=budget, threads=threads, quick=quick, out=out or scratch, **flags)
        ctx, skipped = make_context(build_parser().parse_args(argv), PHASES)  # UserError on a bad choice
        if skipped.get("rejected_models"):  # the command line goes on without them and exits 2; a caller decides
            raise UserError(skipped["rejected_models"][0])
        final = ctx.out_dir
        with intra_op_threads(ctx.threads):  # the caller's thread count back after the run
            code = drive(ctx, PHASES, command=" ".join(["bench.run_bench:", *map(shlex.quote, argv)]),
                         skipped=skipped, started=time.time())
        path = os.path.join(final, "results.json")
        if code not in (0, 1) or not os.path.isfile(path):  # 1: some rows failed, and they are records too
            raise RuntimeError(f"bench run ended with exit status {code}; see the lines it printed")
        return load_results(path)[1]
