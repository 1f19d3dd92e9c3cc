"""The benchmark harness. ``python -m bench.run`` is the command line; ``bench.launch(bench.RunConfig(...))`` the
same run from Python, returning its typed records (bench.api); ``bench.run_bench(models=[...], ...)`` a shorthand.
Imports stay light: torch loads on the first call."""
from bench.config import RunConfig


def launch(config: RunConfig):
    """bench.api.launch: run ``config``, return its Results (env block and records)."""
    from bench.api import launch as run

    return run(config)


def run_bench(**fields):
    """bench.api.run_bench: the records of ``launch(RunConfig(**fields))``."""
    from bench.api import run_bench as run

    return run(**fields)


__all__ = ["RunConfig", "launch", "run_bench"]
