"""The benchmark harness. ``python -m bench.run`` is the command line; ``bench.run_bench(...)`` the same run from
Python (bench.api)."""


def run_bench(**kwargs):
    """bench.api.run_bench: the records of one bench run (imported on first call, so ``import bench`` stays light)."""
    from bench.api import run_bench as run

    return run(**kwargs)
