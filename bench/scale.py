"""Data-parallel scaling of the shared loop: training samples/s with 1..N processes under torchrun (DDP).

Each configuration is a real ``torch.distributed.run`` launch of this module's worker: gloo on CPU, nccl on CUDA, the
model wrapped in DistributedDataParallel, each rank on its shard of the fast loader's per-epoch permutation, the
per-rank batch being the recipe's. On CPU every configuration gets the same total number of threads (threads / N per
process), so the table answers "is N processes better than one process with all the cores".
scaling_efficiency = samples/s(N) / (N x samples/s(1)).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np
import torch

import zoo
from bench.common import BenchContext, failure, record

WORKER_TIMEOUT_S = 900


def _worker(argv: list[str]) -> int:
    import torch.distributed as dist

    from bench.train_phase import _batches_forever
    from zoo.data import make_loaders
    from zoo.engine import StepOptions, build_optimizer, resolve_device, synchronize, train_step
    from zoo.train import _init_distributed

    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--windows", type=int, default=5)
    p.add_argument("--target-s", type=float, default=0.5)
    p.add_argument("--data-root", default="data")
    p.add_argument("--synthetic", action="store_true")
    p.add_argument("--result", required=True)
    args = p.parse_args(argv)
    rank, world, device = _init_distributed(resolve_device(args.device))
    spec = zoo.get_spec(args.model)
    torch.manual_seed(0)
    model = zoo.get_model(args.model, **({"pretrained": "off"} if spec.uses_pretrained else {})).to(device)
    net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if world > 1 else model
    optimizer = build_optimizer(spec.recipe, model)
    opts = StepOptions(device)
    bs = args.batch_size
    data = make_loaders(spec, loader="fast", device=device, root=args.data_root, synthetic=args.synthetic,
                        batch_size=bs, train_samples=bs * world * 64, test_samples=1, rank=rank, world_size=world)
    batches = _batches_forever(data.train)

    def step():
        train_step(net, optimizer, *next(batches), opts)

    for _ in range(2):
        step()
    synchronize(device)
    t = time.perf_counter()
    step()
    synchronize(device)
    # Every rank must run the same number of steps (DDP all-reduces in each backward): rank 0 decides.
    steps = torch.tensor([max(1, round(args.target_s / max(time.perf_counter() - t, 1e-6)))])
    if world > 1:
        dist.broadcast(steps, 0)
    steps = int(steps.item())
    rates = []
    for _ in range(args.windows):
        synchronize(device)
        t = time.perf_counter()
        for _ in range(steps):
            step()
        synchronize(device)
        rates.append(steps * bs * world / (time.perf_counter() - t))
    if rank == 0:
        q1, med, q3 = np.percentile(rates, [25, 50, 75])
        with open(args.result, "w") as f:
            json.dump({"samples_per_s": float(med), "samples_per_s_iqr": float(q3 - q1), "steps_per_window": steps,
                       "windows": args.windows, "threads_per_process": torch.get_num_threads()}, f)
    if world > 1:
        dist.destroy_process_group()
    return 0


def default_max_procs(device: torch.device) -> int:
    if device.type == "cuda":
        return max(torch.cuda.device_count(), 1)
    return max(os.cpu_count() or 1, 1)


def measure_scaling(name: str, ctx: BenchContext, *, max_procs: int | None = None,
                    batch_size: int | None = None) -> list[dict[str, Any]]:
    """Phase "scale" records for 1..max_procs processes (powers of two and max_procs itself)."""
    spec = zoo.get_spec(name)
    device = ctx.device
    bs = batch_size or (min(spec.recipe.batch_size, 64) if ctx.quick else spec.recipe.batch_size)
    max_procs = max_procs or default_max_procs(device)
    counts = sorted({n for n in (1, 2, 4, 8, 16) if n <= max_procs} | {max_procs})
    real = ctx.uses_real_data(name)
    rows: list[dict[str, Any]] = []
    base_rate = None
    for n in counts:
        fields = {"processes": n, "batch_size": bs, "batch_size_global": bs * n, "loader": "fast",
                  "backend": "nccl" if device.type == "cuda" else "gloo", "data": "real" if real else "synthetic"}
        with tempfile.TemporaryDirectory() as tmp:
            result = os.path.join(tmp, "result.json")
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
                   "-m", "bench.scale", "--model", name, "--device", device.type, "--batch-size", str(bs),
                   "--windows", "3" if ctx.quick else "5", "--target-s", "0.2" if ctx.quick else "0.5",
                   "--data-root", ctx.data_root, "--result", result] + ([] if real else ["--synthetic"])
            env = dict(os.environ)
            if device.type == "cpu":
                env["OMP_NUM_THREADS"] = str(max(1, ctx.threads // n))
            try:
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S)
                if proc.returncode != 0 or not os.path.exists(result):
                    tail = [ln for ln in (proc.stderr or "").strip().splitlines() if ln.strip()][-1:] or ["no output"]
                    rows.append(failure(name, device, "scale", f"exit {proc.returncode}: {tail[0][:200]}", **fields))
                    continue
                with open(result) as f:
                    got = json.load(f)
            except subprocess.TimeoutExpired:
                rows.append(failure(name, device, "scale", f"timed out after {WORKER_TIMEOUT_S} s", **fields))
                continue
        if n == 1:
            base_rate = got["samples_per_s"]
        eff = got["samples_per_s"] / (n * base_rate) if base_rate else None
        rows.append(record(name, device, "scale", **fields, **got, scaling_efficiency=eff, quick=ctx.quick))
    return rows


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
