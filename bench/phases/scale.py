"""Data-parallel scaling of the shared loop: training samples/s with 1..N processes, each a real torchrun launch.

Every configuration launches ``python -m torch.distributed.run --standalone --nproc_per_node=N -m bench.phases.scale``
(gloo on CPU, nccl on CUDA; DDP; each rank on its shard of the fast loader's per-epoch permutation; the per-process
batch is the recipe's, so the global batch grows with N). The windows are bench.measure.timing's: rank 0's window size is
broadcast (zoo.distributed.broadcast_int, a tensor on the rank's device) so every rank steps the same count.

Threads follow one rule for every N (``thread_plan``): on CPU the total cores are fixed (``ctx.threads``) and split
evenly, so each of N processes gets threads // N; on CUDA every process gets the same share whatever N is
(threads // the largest N), so the 1-process baseline does not keep all CPU threads while N > 1 get one each. Each
rank pins ``torch.set_num_threads`` and OMP_NUM_THREADS to its share and, where the OS allows
(``os.sched_setaffinity``), runs on its own disjoint CPU set.

Every rank runs the run's maths policy (bench.measure.numerics.apply_policy: TF32 off, cudnn.benchmark on), as every
other row does, and on CUDA the launch sees only the GPUs it uses, the run's GPU first (``CUDA_VISIBLE_DEVICES``,
``visible_gpus``): the 1-process baseline of ``--device cuda:1`` runs on GPU 1, and rank r of N on the r-th of them.
Rank 0 reports the policy it ran under (read after its windows) and its device (``device_identity``: a GPU's UUID,
whatever index the launch gave it); a launch whose report differs from this process's policy or the run's device is
a failed row with the difference as its reason (``worker_mismatch``), never a figure beside the run's others.

The ideal matches the setup (``ScaleRecord.ideal``): CPU with fixed total cores: ideal = rate(1 process with all the
same cores) ("is N processes better than one with all the cores"); GPUs: ideal = N x rate(1).
scaling_efficiency = samples/s(N) / ideal.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from typing import Any

import torch

import zoo
from bench.context import BenchContext, ModelSession
from bench.measure.hardware import device_identity
from bench.measure.numerics import apply_policy, policy_mismatch, policy_state
from bench.measure.timing import steps_for_window, time_window, window_stats
from bench.phases.base import Phase, Priced, kept
from bench.records import Record, ScaleRecord, not_ok
from bench.schedule.budget import TIER_CORE, TIER_SCALE, RowCost
from zoo import plugins
from zoo.data import batches_forever, make_loaders
from zoo.distributed import all_reduce, broadcast_int, destroy, init_distributed, is_main, wrap_ddp
from zoo.engine import StepOptions, build_optimizer, resolve_device, synchronize, train_step

WORKER_TIMEOUT_S = 900
WINDOWS = {True: 3, False: 5}  # timed windows per launch (quick, full): a row's IQR rests on them
WINDOW_S = {True: 0.2, False: 0.5}  # a window's target without a budget (quick, full)
MIN_WINDOW_S = 0.1  # the shortest window a budget may ask for (each holds several all-reduces of a small model)
LAUNCH_S = 4.0  # what a launch costs before its first step here (torchrun, imports, gloo): no budget shortens it
IDEAL_SAME_CORES = "same cores: ideal = rate(1)"
IDEAL_PER_DEVICE = "N devices: ideal = N x rate(1)"


def process_counts(max_procs: int) -> list[int]:
    return sorted({n for n in (1, 2, 4, 8, 16, 32) if n <= max_procs} | {max_procs})


def available_cpus() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def default_max_procs(device: torch.device, threads: int) -> int:
    if device.type == "cuda":
        return max(torch.cuda.device_count(), 1)
    return max(threads, 1)


def thread_plan(device_type: str, n: int, max_procs: int, threads: int, cpus: list[int]) -> tuple[int, list[list[int]]]:
    """(threads per process, one disjoint CPU set per rank) for N processes: the same rule for every N.

    CPU: fixed total cores, split evenly. CUDA: the same per-process share for every N (sized for the largest N).
    CPU sets are consecutive chunks of ``cpus`` of that share; empty when there are not enough CPUs to give each rank
    its own (then only the thread counts are pinned).
    """
    share = max(1, threads // (n if device_type == "cpu" else max_procs))
    if share * n > len(cpus):
        return share, []
    return share, [cpus[r * share:(r + 1) * share] for r in range(n)]


def visible_gpus(n: int, index: int, count: int, visible: str | None) -> str:
    """CUDA_VISIBLE_DEVICES for a launch of ``n`` processes: the run's GPU (``index``, as torch numbers it in this
    process) first, then the others in order, the first ``n`` of them. ``visible`` is this process's own
    CUDA_VISIBLE_DEVICES (its entries, ids or UUIDs, are what torch's indices refer to), None when unset."""
    entries = [e.strip() for e in visible.split(",") if e.strip()] if visible else [str(i) for i in range(count)]
    entries = entries[:count]
    if not 0 <= index < len(entries) or n > len(entries):
        raise ValueError(f"{n} process(es) from cuda:{index} need {n} of {len(entries)} GPU(s)")
    order = [entries[index]] + [e for i, e in enumerate(entries) if i != index]
    return ",".join(order[:n])


def ideal_for(device_type: str, n: int, rate_1: float | None) -> tuple[str, float | None]:
    """(how the ideal is defined, the ideal samples/s) for N processes given the 1-process rate."""
    if device_type == "cpu":
        return IDEAL_SAME_CORES, rate_1
    return IDEAL_PER_DEVICE, None if rate_1 is None else n * rate_1


def window_target_s(quick: bool, budget_s: float | None, launches: int) -> float:
    """Seconds per timed window: WINDOW_S, or less when the model's scale budget, after LAUNCH_S per launch, cannot
    hold each launch's windows (plus about two more for the warm-up and sizing probe), down to MIN_WINDOW_S."""
    target_s = WINDOW_S[quick]
    if budget_s is None:
        return target_s
    fit_s = (budget_s / max(launches, 1) - LAUNCH_S) / (WINDOWS[quick] + 2)
    return max(MIN_WINDOW_S, min(target_s, fit_s))


def worker_command(name: str, ctx: BenchContext, n: int, share: int, cpu_sets: list[list[int]],
                   result: str, target_s: float | None = None) -> tuple[list[str], dict[str, str]]:
    """The torchrun command line and environment of one configuration (``target_s``: the window target, default
    WINDOW_S)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
           "-m", "bench.phases.scale", "--model", name, "--device", ctx.device.type,
           "--batch-size", str(ctx.train_batch_size(name)), "--windows", str(WINDOWS[ctx.quick]),
           "--target-s", f"{WINDOW_S[ctx.quick] if target_s is None else target_s:.3g}", "--data-root", ctx.data_root,
           "--seed", str(ctx.seed), "--threads", str(share), "--result", result]
    if cpu_sets:
        cmd += ["--cpus", ";".join(",".join(map(str, s)) for s in cpu_sets)]
    if not ctx.uses_real_data(name):
        cmd.append("--synthetic")
    env = dict(os.environ, OMP_NUM_THREADS=str(share), **plugins.child_env())  # the ranks see --import's models
    if ctx.device.type == "cuda":  # the launch's own view: cuda:0 is the run's GPU
        env["CUDA_VISIBLE_DEVICES"] = visible_gpus(n, cuda_index(ctx.device), torch.cuda.device_count(),
                                                   os.environ.get("CUDA_VISIBLE_DEVICES"))
    return cmd, env


def cuda_index(device: torch.device) -> int:
    """The index of a CUDA device (the current device when it has none)."""
    if device.index is not None:
        return device.index
    return torch.cuda.current_device() if torch.cuda.is_available() else 0


def worker_mismatch(got: dict[str, Any], device: torch.device) -> str | None:
    """Why a launch's result cannot stand beside the run's other rows (None when it can): its rank 0 ran under other
    maths than this process runs now, or on another device than the run's."""
    maths = policy_mismatch(got.get("maths"), policy_state())
    if maths:
        return f"the worker ran under another maths policy: {maths}"
    mine = device_identity(device)
    if got.get("device") != mine:
        return f"the worker ran on {got.get('device')!r}, not the run's device {mine!r}"
    return None


def run_worker(cmd: list[str], env: dict[str, str], timeout_s: float) -> tuple[int, str]:
    """(exit code, last stderr line); the whole process group is killed on timeout or Ctrl-C."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _, err = proc.communicate(timeout=timeout_s)
    except BaseException:  # TimeoutExpired, KeyboardInterrupt: torchrun and its ranks go together
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    lines = [ln for ln in (err or "").splitlines() if ln.strip()]
    return proc.returncode, (lines[-1][:200] if lines else "no output")


class ScalePhase(Phase):
    name = "scale"
    record_type = ScaleRecord
    in_quick = False  # each configuration is a process launch of its own: seconds of start-up per row

    def _counts(self, ctx: BenchContext) -> list[int]:
        return process_counts(ctx.max_procs or default_max_procs(ctx.device, ctx.threads))

    def planned_rows(self, name: str, ctx: BenchContext) -> int:
        return len(self._counts(ctx))

    def row_costs(self, name: str, ctx: BenchContext, prices) -> Priced:
        """Per process count: a torchrun start-up (priced once, a quarter more per extra process), each rank's build
        and split, the sizing probe and WINDOWS windows of the N-way step (N ranks share the cores on a CPU: N x one
        step), at least MIN_WINDOW_S (floor) or WINDOW_S (full). On a CPU the whole phase goes early in the drop
        order (its processes share the same cores)."""
        mp = prices.models.get(name)
        step_s = (mp.train_step_s if mp else None) or 1.0
        launch_s = prices.torchrun_s or prices.build("torchrun")
        cpu = ctx.device.type == "cpu"
        bs, rows = ctx.train_batch_size(name), []
        for n in self._counts(ctx):
            s = step_s * n if cpu else step_s
            once = launch_s * (1 + 0.25 * (n - 1)) + (mp.build_s if mp else 1.0) + 4 * s + \
                prices.build("loader_per_1k_samples") * bs * n * 64 / 1000
            windows = WINDOWS[ctx.quick]
            rows.append(RowCost(name, self.name, f"procs={n}", once + windows * max(s, MIN_WINDOW_S),
                                once + windows * max(s, WINDOW_S[ctx.quick]), TIER_SCALE if cpu else TIER_CORE,
                                fields=self._fields(name, ctx, n, 1) | {"threads_per_process": None},
                                args=("--max-procs", str(n))))
        return rows, {}

    def _fields(self, name: str, ctx: BenchContext, n: int, share: int) -> dict[str, Any]:
        bs = ctx.train_batch_size(name)
        return {"processes": n, "batch_size": bs, "batch_size_global": bs * n, "threads_per_process": share,
                "dist_backend": "nccl" if ctx.device.type == "cuda" else "gloo", "data": ctx.data_label(name),
                "quick": ctx.quick}

    def run(self, session: ModelSession, ctx: BenchContext) -> list[Record]:
        name, dev = session.name, ctx.device.type
        every = self._counts(ctx)
        counts = [n for n in every if kept(ctx, name, self.name, f"procs={n}")]  # the rest: the budget's
        target_s = window_target_s(ctx.quick, ctx.budget_for(name, self.name), len(counts))
        rows: list[Record] = []
        rate_1 = None
        for n in counts:
            share, cpu_sets = thread_plan(dev, n, every[-1], ctx.threads, available_cpus())
            fields = self._fields(name, ctx, n, share)
            with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
                result = os.path.join(tmp, "result.json")
                cmd, env = worker_command(name, ctx, n, share, cpu_sets, result, target_s)
                try:
                    code, last = run_worker(cmd, env, WORKER_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    rows.append(not_ok(ScaleRecord, name, dev, f"timed out after {WORKER_TIMEOUT_S} s", **fields))
                    continue
                if code != 0 or not os.path.exists(result):
                    rows.append(not_ok(ScaleRecord, name, dev, f"exit {code}: {last}", **fields))
                    continue
                with open(result) as f:
                    got = json.load(f)
            refused = worker_mismatch(got, ctx.device)
            if refused:  # not comparable with the run's rows, nor a baseline for the others
                rows.append(not_ok(ScaleRecord, name, dev, refused, **fields))
                continue
            stats = window_stats(got["window_rates"])
            if n == 1:
                rate_1 = stats["samples_per_s"]
            ideal, ideal_rate = ideal_for(dev, n, rate_1)
            rows.append(ScaleRecord(model=name, device=dev, **fields, **stats, steps_per_window=got["steps_per_window"],
                                    ideal=ideal, ideal_samples_per_s=ideal_rate,
                                    scaling_efficiency=stats["samples_per_s"] / ideal_rate if ideal_rate else None))
        return rows

    def failed(self, session: ModelSession, ctx: BenchContext, exc: BaseException) -> list[Record]:
        counts = self._counts(ctx)
        return [not_ok(ScaleRecord, session.name, ctx.device.type, exc,
                       **self._fields(session.name, ctx, n, thread_plan(ctx.device.type, n, counts[-1], ctx.threads,
                                                                        available_cpus())[0])) for n in counts]


# ---------------------------------------------------------------------------------------------------------------
# The worker: one rank of a torchrun launch


def parse_worker_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.phases.scale")
    p.add_argument("--model", required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--windows", type=int, default=5)
    p.add_argument("--target-s", type=float, default=0.5)
    p.add_argument("--data-root", default="data")
    p.add_argument("--synthetic", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--cpus", default="", help="per local rank, ';'-separated comma lists of CPU ids")
    p.add_argument("--result", required=True)
    return p.parse_args(argv)


def pin_this_rank(threads: int, cpus: str, local_rank: int) -> None:
    """Threads (torch and OpenMP) and, where the OS allows, this rank's own CPU set."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    sets = [s for s in cpus.split(";") if s]
    if sets and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(c) for c in sets[local_rank].split(",")})


def worker(argv: list[str]) -> int:
    args = parse_worker_args(argv)
    pin_this_rank(args.threads, args.cpus, int(os.environ.get("LOCAL_RANK", "0")))
    rank, world, device = init_distributed(resolve_device(args.device))
    maths = apply_policy(device)  # the run's maths policy: the same arithmetic as every other row
    spec = zoo.get_spec(args.model)
    torch.manual_seed(args.seed)
    model = zoo.get_model(args.model, **({"pretrained": "off"} if spec.uses_pretrained else {})).to(device)
    net = wrap_ddp(model, device, world)
    optimizer, opts = build_optimizer(spec.recipe, model), StepOptions(device)
    bs = args.batch_size
    data = make_loaders(spec, loader="fast", device=device, root=args.data_root, synthetic=args.synthetic,
                        batch_size=bs, seed=args.seed, train_samples=bs * world * 64, test_samples=1, rank=rank,
                        world_size=world)
    batches = batches_forever(data.train)

    def step() -> int:
        x, y = next(batches)
        train_step(net, optimizer, x, y, opts)
        return int(y.shape[0])

    def sync() -> None:
        synchronize(device)

    # Every rank must step the same count (DDP all-reduces in each backward): rank 0's window size wins.
    steps = steps_for_window(step, sync, args.target_s, agree=lambda k: broadcast_int(k, device))
    rates = []
    for _ in range(args.windows):
        seconds, samples = time_window(step, sync, steps)
        total = all_reduce([float(samples)], device)[0]  # after the window: outside the timed interval
        rates.append(total / seconds)
    if is_main():
        with open(args.result, "w") as f:
            json.dump({"window_rates": rates, "steps_per_window": steps, "threads": torch.get_num_threads(),
                       "maths": {**maths, **policy_state()}, "device": device_identity(device)}, f)
    destroy()
    return 0


if __name__ == "__main__":
    sys.exit(worker(sys.argv[1:]))
