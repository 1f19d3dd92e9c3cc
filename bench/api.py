"""The library: ``bench.launch(RunConfig(...))`` runs the driver that ``python -m bench.run`` runs and returns what it
measured (bench.run.Results: the env block and the typed records). The command line parses its flags into the same
RunConfig (bench.config) and calls the same driver; nothing here goes through argv.

Files are written only when ``config.out`` names a folder: with ``out=None`` the run's artefacts (ONNX exports,
LoadGen logs) go to a scratch folder that is removed afterwards, and no results.json is read back: the records are
the driver's own objects. A bad choice raises zoo.errors.UserError with the command line's one-line message; a run
that another holds the folder for, or that was interrupted, raises RuntimeError naming its exit status.
``bench.run_bench(models=[...], ...)`` is the same call with RunConfig's fields as keywords, returning the records.
"""
from __future__ import annotations

import os
import shlex
import tempfile
import time
from typing import Any

from bench.config import RunConfig
from bench.records import Record
from zoo.errors import UserError


def describe(config: RunConfig) -> str:
    """The run as a person reads it in the env block: the non-default fields, as Python keywords."""
    default = RunConfig()
    changed = {k: v for k, v in vars(config).items() if v != getattr(default, k)}
    return "bench.launch: " + " ".join(f"{k}={shlex.quote(repr(v))}" for k, v in changed.items())


def launch(config: RunConfig) -> Any:
    """Run ``config`` and return its bench.run.Results (records with exit status 0 or 1: failed rows are records)."""
    from bench.measure.machine import intra_op_threads
    from bench.phases import PHASES
    from bench.plan import make_context
    from bench.report.load import load_results
    from bench.run import Results, execute
    from bench.runner.repeat import repeat_count, run_repeated

    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        run_config = config if config.out is not None else config.replace(out=scratch)
        ctx, skipped = make_context(run_config, PHASES)  # UserError on a bad choice
        repeat = repeat_count(config.repeat, config.quick)
        if skipped.get("rejected_models"):  # the command line goes on without them and exits 2; a caller decides
            raise UserError(skipped["rejected_models"][0])
        with intra_op_threads(ctx.threads):  # the caller's thread count back after the run
            if repeat > 1:  # fresh processes write their files; the merged run is read back from them
                code = run_repeated(ctx, PHASES, run_config.to_argv(), describe(config), repeat)
                path = os.path.join(ctx.out_dir, "results.json")
                env, records = load_results(path) if code in (0, 1) and os.path.isfile(path) else (None, [])
                results = Results(env, records, code, ctx.out_dir)
            else:
                results = execute(ctx, PHASES, command=describe(config), skipped=skipped, started=time.time())
        if results.exit_code not in (0, 1):
            raise RuntimeError(f"bench run ended with exit status {results.exit_code}; see the lines it printed")
        if config.out is None:
            results.out_dir = None
        return results


def run_bench(**fields: Any) -> list[Record]:
    """The records of ``launch(RunConfig(**fields))``; a field RunConfig does not have is a TypeError."""
    return launch(RunConfig(**fields)).records
