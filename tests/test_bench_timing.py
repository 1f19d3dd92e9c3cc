"""bench.measure.timing: the one clock (per-call samples with the device drained inside every interval), the statistics a
latency row prints, how many calls a row is planned, and the timed window of the training and scaling phases.
Every test but the real-clock ones runs on a fake clock: behaviour, never wall-clock speed."""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
import torch

import bench.measure.timing as timing
from bench.measure.timing import (
    latency_stats,
    plan_note,
    sample_latencies,
    sampling_plan,
    steps_for_window,
    time_window,
    window_stats,
)
from bench.records import PERCENTILE_MIN_CALLS, InferRecord


class FakeDevice:
    """A fake clock plus a device whose work lands when it is synchronized: each call queues ``call_s`` of host time
    and ``queued_s`` of device time that only ``sync()`` waits for. ``events`` records the order of calls and syncs."""

    def __init__(self, call_s: float, queued_s: float = 0.0):
        self.now, self.call_s, self.queued_s = 100.0, call_s, queued_s
        self.pending_s, self.calls, self.syncs, self.events = 0.0, 0, 0, []

    def clock(self) -> float:
        return self.now

    def fn(self):
        self.calls += 1
        self.events.append("call")
        self.now += self.call_s
        self.pending_s += self.queued_s

    def sync(self):
        self.syncs += 1
        self.events.append("sync")
        self.now += self.pending_s
        self.pending_s = 0.0


@pytest.fixture
def device(monkeypatch):
    def make(call_s: float, queued_s: float = 0.0) -> FakeDevice:
        d = FakeDevice(call_s, queued_s)
        monkeypatch.setattr(timing, "clock", d.clock)
        return d

    return make


# -- sample_latencies ----------------------------------------------------------------------------------------------


def test_queued_device_work_lands_in_the_call_that_queued_it(device):
    d = device(call_s=0.001, queued_s=0.009)
    samples = sample_latencies(d.fn, d.sync, min_calls=5, min_seconds=0.0, warmup=2)
    # the sync after each call is inside its interval: every sample holds its own 9 ms of device work
    assert samples == pytest.approx([0.010] * 5)
    assert d.events == ["call", "call", "sync"] + ["call", "sync"] * 5


def test_warmup_calls_are_not_sampled(device):
    d = device(0.01)
    samples = sample_latencies(d.fn, d.sync, min_calls=7, min_seconds=0.0, warmup=3)
    assert len(samples) == 7 and d.calls == 10
    assert samples == pytest.approx([0.01] * 7)


def test_min_seconds_extends_sampling(device):
    d = device(0.01)
    samples = sample_latencies(d.fn, d.sync, min_calls=5, min_seconds=0.5, warmup=0)
    assert len(samples) == 50  # 5 calls would be 0.05 s; the 0.5 s floor wins
    assert sum(samples) == pytest.approx(0.5)


def test_min_calls_extends_sampling(device):
    d = device(0.2)
    assert len(sample_latencies(d.fn, d.sync, min_calls=12, min_seconds=0.5, warmup=1)) == 12


def test_max_seconds_caps_sampling_but_keeps_one_sample(device):
    d = device(0.01)
    samples = sample_latencies(d.fn, d.sync, min_calls=1000, min_seconds=0.0, warmup=0, max_seconds=0.1)
    assert 9 <= len(samples) <= 11
    slow = device(5.0)
    assert sample_latencies(slow.fn, slow.sync, min_calls=10, min_seconds=0.0, warmup=0, max_seconds=1.0) == [5.0]


@pytest.mark.parametrize("kwargs", [dict(min_calls=0), dict(min_seconds=-1.0), dict(warmup=-1),
                                    dict(max_seconds=0.0)])
def test_bad_sampling_arguments_are_refused(kwargs):
    args = {"min_calls": 1, "min_seconds": 0.0, "warmup": 0, **kwargs}
    with pytest.raises(ValueError):
        sample_latencies(lambda: None, lambda: None, **args)


def test_real_clock_never_undercounts_a_sleep():
    samples = sample_latencies(lambda: time.sleep(0.002), lambda: None, min_calls=5, min_seconds=0.0, warmup=1)
    assert len(samples) == 5 and min(samples) >= 0.002


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_samples_include_the_queued_kernels():
    from zoo.engine import synchronize

    dev = torch.device("cuda")
    fn = lambda: torch.cuda._sleep(50_000_000)  # noqa: E731  (returns at once on the host; the GPU is busy)
    host_only = sample_latencies(fn, lambda: None, min_calls=3, min_seconds=0.0, warmup=1)
    synced = sample_latencies(fn, lambda: synchronize(dev), min_calls=3, min_seconds=0.0, warmup=1)
    assert np.median(synced) > 5 * np.median(host_only)


# -- latency_stats -------------------------------------------------------------------------------------------------


def test_stats_of_1_to_100_ms():
    s = latency_stats([i / 1000 for i in range(1, 101)], batch_size=4)
    assert s["n_calls"] == 100
    assert s["p50_ms"] == pytest.approx(50.5)  # numpy's linear interpolation
    assert s["p90_ms"] == pytest.approx(90.1)  # 100 calls: p90 rests on enough
    assert s["p99_ms"] is None  # below 1000 calls
    assert s["max_ms"] == pytest.approx(100.0) and s["mean_ms"] == pytest.approx(50.5)
    assert s["iqr_ms"] == pytest.approx(75.25 - 25.75)
    assert s["latencies_ms"] == pytest.approx(list(range(1, 101)))


def test_percentiles_appear_exactly_at_their_minimum_calls():
    for q, key in ((90, "p90_ms"), (99, "p99_ms")):
        n = PERCENTILE_MIN_CALLS[q]
        assert latency_stats(np.full(n - 1, 0.001), 1)[key] is None
        assert latency_stats(np.full(n, 0.001), 1)[key] == pytest.approx(1.0)
    big = latency_stats(np.arange(1, 1001) / 1000, 1)
    assert big["p99_ms"] == pytest.approx(np.percentile(np.arange(1, 1001), 99))


def test_throughput_divides_the_median_not_the_mean():
    s = latency_stats([0.001, 0.001, 0.001, 0.001, 0.1], batch_size=4)
    assert s["mean_ms"] == pytest.approx(20.8)
    assert s["samples_per_s"] == pytest.approx(4 / 0.001)


def test_stats_are_the_fields_of_an_infer_record():
    s = latency_stats(np.linspace(0.001, 0.002, 30), batch_size=2)
    names = {f.name for f in dataclasses.fields(InferRecord)}
    assert set(s) <= names
    assert set(s) == {"n_calls", "latencies_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms", "iqr_ms",
                      "samples_per_s"}
    InferRecord(model="mlp", backend="eager", batch_size=2, **s)


def test_raw_latencies_keep_four_significant_figures():
    s = latency_stats([0.001234567, 0.123456789, 1.0], batch_size=1)
    assert s["latencies_ms"] == [1.235, 123.5, 1000.0]


@pytest.mark.parametrize("bad", [[], [float("nan")], [-0.001, 0.002]])
def test_stats_reject_bad_samples(bad):
    with pytest.raises(ValueError):
        latency_stats(bad, batch_size=1)


# -- sampling_plan -------------------------------------------------------------------------------------------------


def test_full_plan_gives_batch_one_a_valid_p99_and_batches_a_valid_p90():
    one, many = sampling_plan(1, quick=False), sampling_plan(64, quick=False)
    assert one["min_calls"] >= PERCENTILE_MIN_CALLS[99] and one["min_seconds"] >= 1.0
    assert many["min_calls"] >= PERCENTILE_MIN_CALLS[90] and many["min_seconds"] >= 1.0
    assert one["max_seconds"] >= many["max_seconds"] > 0
    assert set(one) == {"min_calls", "min_seconds", "warmup", "max_seconds"}
    assert "p99 valid" in plan_note(one)


def test_quick_plan_is_small():
    q = sampling_plan(1, quick=True)
    assert q["min_calls"] < PERCENTILE_MIN_CALLS[90] and q["max_seconds"] <= 5


def test_a_slow_model_plans_what_fits_and_says_p99_will_be_none():
    plan = sampling_plan(1, quick=False, est_call_s=0.2)  # 1000 calls would take 200 s
    assert plan["min_calls"] < PERCENTILE_MIN_CALLS[99]
    assert plan["min_calls"] * 0.2 <= plan["max_seconds"]
    assert plan["warmup"] * 0.2 <= 0.1 * plan["max_seconds"] + 0.2
    assert "p99 None" in plan_note(plan)
    assert sampling_plan(1, quick=False, est_call_s=0.001)["min_calls"] == PERCENTILE_MIN_CALLS[99]
    assert "p50 and max only" in plan_note(sampling_plan(64, quick=False, est_call_s=1.0))


def test_a_plan_runs_through_the_sampler(device):
    d = device(0.0005)
    samples = sample_latencies(d.fn, d.sync, **sampling_plan(1, quick=False))
    assert latency_stats(samples, 1)["p99_ms"] is not None


# -- steps_for_window / time_window --------------------------------------------------------------------------------


def test_steps_for_window_sizes_from_the_timed_probe(device):
    d = device(0.01)

    def step():
        d.fn()
        return 64

    assert steps_for_window(step, d.sync, 1.0) == 100
    assert d.events[:2] == ["call", "sync"]  # the untimed warm-up step comes first


def test_steps_for_window_lets_rank_zero_decide(device):
    d = device(0.01)
    seen = []

    def agree(n: int) -> int:
        seen.append(n)
        return 7

    assert steps_for_window(lambda: (d.fn(), 1)[1], d.sync, 1.0, agree=agree) == 7
    assert seen == [0, 100]  # the stop decision (rank 0's 7 says stop) after the 1-step probe, then the count


def test_steps_for_window_probe_stops_when_rank_zero_says_so(device):
    """A rank whose own probe would stop early (slow clock) goes on as long as rank 0 says so, and the other way."""
    d = device(1.0)  # every probe lasts >= 5% of the target here: on its own this rank stops after 1 step
    said = iter([0, 0, 1])  # rank 0: go on, go on, stop
    seen = []

    def agree(k: int) -> int:
        seen.append(k)
        return next(said) if len(seen) <= 3 else 9

    assert steps_for_window(lambda: (d.fn(), 1)[1], d.sync, 1.0, agree=agree) == 9
    assert d.calls == 1 + 1 + 4 + 16  # warm-up, then the probes rank 0 asked for
    assert seen[:3] == [1, 1, 1]  # this rank's own verdicts, which lost


def test_steps_for_window_two_gloo_ranks_with_different_clocks_agree():
    """Two gloo ranks (threads, one process group each) whose clocks see 100x different step times step the same
    number of probe steps and size the same window: under DDP every step is an all-reduce, so a rank that probed
    more steps than the other would wait on a collective that never comes."""
    import datetime
    import threading

    import torch.distributed as dist

    store, local = dist.HashStore(), threading.local()
    results: dict[int, tuple[int, int]] = {}
    errors: list[BaseException] = []

    def rank_main(rank: int, step_s: float) -> None:
        try:
            pg = dist.ProcessGroupGloo(store, rank, 2, datetime.timedelta(seconds=30))
            local.now, calls = 0.0, [0]

            def step() -> int:
                local.now += step_s
                calls[0] += 1
                return 1

            def agree(k: int) -> int:
                t = torch.tensor([k], dtype=torch.int64)
                pg.broadcast(t, 0).wait()
                return int(t.item())

            steps = steps_for_window(step, lambda: None, 1.0, agree=agree)
            results[rank] = (steps, calls[0])
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)

    old = timing.clock
    timing.clock = lambda: local.now
    try:
        threads = [threading.Thread(target=rank_main, args=(0, 0.01)), threading.Thread(target=rank_main, args=(1, 1e-4))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        timing.clock = old
    assert not errors, errors
    # rank 0 stops after the 16-step probe (0.16 s >= 5% of 1 s), rank 1 alone would have gone on to 64
    assert results[0] == results[1] == (100, 1 + 1 + 4 + 16)


def test_time_window_counts_a_short_last_batch(device):
    d = device(0.5, queued_s=0.25)
    sizes = iter([64, 64, 10])

    def step():
        d.fn()
        return next(sizes)

    seconds, samples = time_window(step, d.sync, 3)
    assert samples == 138
    assert seconds == pytest.approx(3 * 0.75)  # the final sync is inside the window
    assert d.events == ["sync", "call", "call", "call", "sync"]


def test_time_window_refuses_a_step_that_does_not_count():
    with pytest.raises(TypeError, match="number of samples"):
        time_window(lambda: None, lambda: None, 2)


def test_window_stats_take_the_median_window():
    s = window_stats([100.0, 300.0, 110.0, 90.0, 105.0])
    assert s["samples_per_s"] == 105.0 and s["windows"] == 5
    assert s["samples_per_s_iqr"] == pytest.approx(110.0 - 100.0)


@pytest.mark.parametrize("target_s", [0.0, -1.0])
def test_steps_for_window_needs_a_positive_target(target_s):
    with pytest.raises(ValueError, match="target_s must be > 0"):
        steps_for_window(lambda: 1, lambda: None, target_s)


@pytest.mark.parametrize("call_s, target_s, probes, steps", [
    (0.01, 1.0, [1, 4, 16], 100),  # 16 steps are the first probe to last 5% of the target
    (0.25, 20.0, [1, 4], 80),  # exactly 5% of the target is long enough
    (2.0, 1.0, [1], 1),  # one step already longer than the target: one-step windows, never zero
    (0.0, 1.0, [1, 4, 16, 64], 64),  # a clock that sees no time: the probe stops at its largest size
])
def test_steps_for_window_probes_1_4_16_64_until_5_percent_of_the_target(device, call_s, target_s, probes, steps):
    d = device(call_s)
    assert steps_for_window(lambda: (d.fn(), 1)[1], d.sync, target_s) == steps
    assert d.calls == 1 + sum(probes)  # one untimed warm-up step, then the probes
    assert d.events == ["call", "sync"] + [e for n in probes for e in ["call"] * n + ["sync"]]


def test_window_stats_of_one_window_and_of_none():
    s = window_stats([120, 80, 100])  # int rates still give float fields
    assert s["window_rates"] == [120.0, 80.0, 100.0] and all(type(r) is float for r in s["window_rates"])
    assert type(s["samples_per_s"]) is float and s["samples_per_s_iqr"] == pytest.approx(20.0)
    one = window_stats([123.456789])
    assert one == {"samples_per_s": 123.456789, "samples_per_s_iqr": 0.0, "windows": 1, "window_rates": [123.5]}
    with pytest.raises(ValueError, match=r"^no timed windows$"):
        window_stats([])


@pytest.mark.parametrize("kwargs, match", [
    (dict(min_calls=0), r"^min_calls must be >= 1, not 0$"),
    (dict(min_seconds=-1.0), r"^min_seconds and warmup must be >= 0$"),
    (dict(warmup=-1), r"^min_seconds and warmup must be >= 0$"),
    (dict(max_seconds=0.0), r"^max_seconds must be > 0 or None, not 0.0$"),
])
def test_bad_sampling_arguments_say_which(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample_latencies(lambda: None, lambda: None, **{"min_calls": 1, "min_seconds": 0.0, "warmup": 0, **kwargs})


def test_sampling_stops_as_soon_as_a_bound_is_reached(device):
    d = device(0.25)  # binary-exact times: the comparisons meet their bounds exactly
    assert sample_latencies(d.fn, d.sync, min_calls=1, min_seconds=0.0, warmup=0) == [0.25]
    assert len(sample_latencies(d.fn, d.sync, min_calls=1, min_seconds=0.5, warmup=0)) == 2
    assert len(sample_latencies(d.fn, d.sync, min_calls=100, min_seconds=0.0, warmup=0, max_seconds=0.5)) == 2


def test_zero_latencies_are_kept_but_give_no_throughput():
    s = latency_stats([0.0, 0.0, 0.001], batch_size=8)
    assert s["latencies_ms"] == [0.0, 0.0, 1.0] and s["p50_ms"] == 0.0
    assert s["samples_per_s"] is None  # a zero median has no finite rate


@pytest.mark.parametrize("bad, batch_size, match", [
    ([], 1, r"^no latency samples$"),
    ([float("inf")], 1, r"^latency samples must be finite and non-negative$"),
    ([-0.001], 1, r"^latency samples must be finite and non-negative$"),
    ([0.001], 0, r"^batch_size must be >= 1, not 0$"),
])
def test_bad_latency_samples_say_why(bad, batch_size, match):
    with pytest.raises(ValueError, match=match):
        latency_stats(bad, batch_size=batch_size)


def test_full_plans_exactly():
    assert sampling_plan(1, quick=False) == {"min_calls": 1000, "min_seconds": 1.0, "warmup": 10, "max_seconds": 60.0}
    assert sampling_plan(2, quick=False) == {"min_calls": 100, "min_seconds": 1.0, "warmup": 10, "max_seconds": 30.0}
    assert sampling_plan(1, quick=False, est_call_s=0.0) == sampling_plan(1, quick=False)  # no estimate
    # 2 s per call: 30 calls fit in 60 s, and 3 warm-up calls are 10% of it
    assert sampling_plan(1, quick=False, est_call_s=2.0) == {"min_calls": 30, "min_seconds": 1.0, "warmup": 3,
                                                             "max_seconds": 60.0}
    slow = sampling_plan(4, quick=False, est_call_s=100.0)  # slower than the cap: still one warm-up and one call
    assert (slow["min_calls"], slow["warmup"]) == (1, 1)
    with pytest.raises(ValueError, match=r"^batch_size must be >= 1, not 0$"):
        sampling_plan(0, quick=True)


@pytest.mark.parametrize("calls, valid", [(1000, "p99 valid"), (999, "p90 valid, p99 None"),
                                          (100, "p90 valid, p99 None"), (99, "p50 and max only")])
def test_plan_note_says_which_percentiles_the_calls_allow(calls, valid):
    plan = {"min_calls": calls, "min_seconds": 1.0, "warmup": 10, "max_seconds": 60.0}
    assert plan_note(plan) == f">= {calls} calls ({valid}), >= 1 s, cap 60 s, 10 warm-up calls"


def test_time_window_needs_a_step():
    with pytest.raises(ValueError, match=r"^steps must be >= 1, not 0$"):
        time_window(lambda: 1, lambda: None, 0)
    assert time_window(lambda: 5, lambda: None, 1)[1] == 5


# -- device time (CUDA events) and back-to-back throughput ----------------------------------------------------------


def test_device_times_bracket_each_call_with_events_on_the_given_stream_and_sync_once():
    log = []

    class Event:
        def __init__(self, enable_timing):
            assert enable_timing
            self.at = None

        def record(self, stream):
            log.append(("record", stream))
            self.at = len([e for e in log if e[0] == "call"])

        def synchronize(self):
            log.append(("sync", None))

        def elapsed_time(self, end):
            return 2.5 * (end.at - self.at)

    fake = type("FakeCuda", (), {"Event": Event})
    got = timing.device_times_ms(lambda: log.append(("call", None)), "s1", 3, events=fake)
    assert got == [2.5, 2.5, 2.5]
    assert log == [("record", "s1"), ("call", None), ("record", "s1")] * 3 + [("sync", None)]  # no host sync between
    with pytest.raises(ValueError):
        timing.device_times_ms(lambda: None, "s", 0, events=fake)


def test_back_to_back_rate_syncs_once_around_all_calls(device):
    d = device(0.01, queued_s=0.04)
    rate = timing.back_to_back_rate(d.fn, d.sync, 10, batch_size=8)
    assert d.events == ["sync"] + ["call"] * 10 + ["sync"]
    assert rate == pytest.approx(10 * 8 / (10 * 0.05))


def test_cpu_rows_have_no_device_time():
    from bench.backends.torch_eager import EagerBackend
    from bench.context import BenchContext
    from bench.phases.infer import device_fields

    ctx = BenchContext(torch.device("cpu"), quick=True, synthetic=True, checkpoints=None, threads=1)
    assert EagerBackend(None, ctx).event_stream() is None
    assert device_fields(EagerBackend(None, ctx), lambda: None, 1, True) == {}
    from bench.backends.onnxruntime import OrtCudaBackend

    ctx.device = torch.device("cuda", 0)
    assert OrtCudaBackend(None, ctx).event_stream() is None  # its own stream: torch's events would time nothing
