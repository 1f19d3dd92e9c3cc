"""The infer phase's race on the CPU (bench.phases.infer with bench.phases.infer_race): at batch 1 and the recipe's
batch the backends within their accuracy budget race; the clearly slower is dropped and keeps its row; a backend
outside its accuracy budget is timed alone and cannot win; other batch sizes are timed one backend at a time."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

import bench.phases.infer as infer
import zoo
from bench.backends.torch_eager import EagerBackend
from bench.context import BenchContext, ModelSession
from bench.phases.infer import InferPhase, fill_speedups
from bench.records import InferRecord

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def sleeper(name: str, seconds: float) -> type[EagerBackend]:
    class Sleeper(EagerBackend):
        def bind(self, x):
            call = super().bind(x)
            return lambda: (time.sleep(seconds), call())[1]

    Sleeper.name = name
    return Sleeper


class Wrong(EagerBackend):
    """Fast, and its predictions are noise: outside its accuracy budget."""

    name = "wrong"

    def predict(self, x):
        return torch.randn(x.shape[0], 10, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def ctx(tmp_path, monkeypatch):
    for cls in (sleeper("slow", 0.001), sleeper("slower", 0.004), Wrong):
        monkeypatch.setitem(infer.BACKENDS, cls.name, cls)
    return BenchContext(device=torch.device("cpu"), quick=True, synthetic=True, checkpoints=None,
                        out_dir=str(tmp_path), threads=1, batch_sizes=[1, 4],
                        backends=["eager", "slow", "slower", "wrong"])


@pytest.mark.slow  # an accuracy pass per backend and two races: ~30 s on two shared cores
def test_the_backends_race_at_batch_1_and_the_slower_one_is_dropped(ctx):
    torch.manual_seed(0)
    rows = InferPhase().run(ModelSession("mlp", zoo.get_model("mlp").eval()), ctx)
    at1 = {r.backend: r for r in rows if r.batch_size == 1}
    assert {b: r.race for b, r in at1.items()} == {"eager": "winner", "slow": "runner-up", "slower": "dropped",
                                                    "wrong": "not eligible"}
    winner, dropped = at1["eager"], at1["slower"]
    assert winner.race_leader == "slow" and winner.race_vs_leader > 1 and winner.race_vs_leader_lo > 1
    assert winner.race_target_met is True and winner.race_reached_pct <= ctx.precision_pct
    assert dropped.race_leader == "eager" and dropped.race_vs_leader_lo > 1 and dropped.race_conf == 0.99
    assert dropped.n_calls == len(dropped.latencies_ms) > 0 and dropped.n_calls < winner.n_calls
    assert at1["wrong"].accuracy_ok is False and at1["wrong"].p50_ms is not None  # timed, but it cannot win
    assert at1["slow"].speedup_vs_eager_hi < 1  # eager is faster, and its interval says so
    # batch 4 is not a headline (the recipe's batch is 32 in a quick run): timed one backend at a time, not raced
    assert {r.race for r in rows if r.batch_size == 4} == {None}
    assert all(r.ok for r in rows)


def test_each_chunk_warms_long_enough_to_outlast_the_previous_backends_spinning_threads(ctx):
    from bench.phases.infer_race import CHUNK_WARMUP, MAX_WARM_CALLS, SWITCH_S, open_lane

    session = ModelSession("mlp", zoo.get_model("mlp").eval())
    x = torch.zeros(1, 1, 28, 28)
    slow = open_lane("slower", infer.BACKENDS["slower"](session, ctx), x)  # 4 ms a call: one warm call is enough
    assert slow.warm_calls == CHUNK_WARMUP and slow.bind_s >= 0 and slow.memory.get("peak_mem_mb") is not None
    fast = open_lane("quick", sleeper("quick", 0.0002)(session, ctx), x)  # ~0.3 ms a call: SWITCH_S needs several
    assert CHUNK_WARMUP < fast.warm_calls <= round(SWITCH_S / 0.0002) <= MAX_WARM_CALLS


def test_vs_eager_carries_its_interval_and_a_repeated_row_is_resampled_by_process():
    rng = np.random.default_rng(3)
    eager = list(2.0 + 0.01 * rng.standard_normal(200))
    fast = list(1.0 + 0.01 * rng.standard_normal(200))
    rows = [InferRecord(backend="eager", batch_size=1, p50_ms=float(np.median(eager)), latencies_ms=eager),
            InferRecord(backend="onnxruntime", batch_size=1, p50_ms=float(np.median(fast)), latencies_ms=fast)]
    fill_speedups(rows)
    r = rows[1]
    assert r.speedup_vs_eager_lo < r.speedup_vs_eager < r.speedup_vs_eager_hi and r.speedup_vs_eager_lo > 1.9
    assert rows[0].speedup_vs_eager_lo is None  # eager against itself: no interval to print
    # two processes that disagree by 2x: the interval spans them, where the pooled calls (3 in 4 from the first
    # process) would give a narrow one around the first process's median
    split = list(1.0 + 0.01 * rng.standard_normal(150)) + list(2.0 + 0.01 * rng.standard_normal(50))
    rows[1] = InferRecord(backend="onnxruntime", batch_size=1, p50_ms=1.5, latencies_ms=split,
                          samples_per_repeat=[150, 50])
    fill_speedups(rows)
    assert rows[1].speedup_vs_eager_hi / rows[1].speedup_vs_eager_lo > 1.5
