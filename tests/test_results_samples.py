"""A long raw-sample list in results.json (bench.report.samples): stored as its values' counts per process, read back
with every sample, so every statistic the report and bench.compare take is the one the measured list gives."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bench.analysis.verdicts import judge
from bench.measure import timing
from bench.measure.stats import median_ratio_ci, split_processes
from bench.records import InferRecord, RunEnv, ServeRecord
from bench.report import samples
from bench.report.files import results_payload
from bench.report.load import parse_results


def noop_like(n: int, seed: int = 0) -> list[float]:
    """A fast call's samples: microseconds, 4 significant figures (as timing.latency_stats stores them)."""
    rng = np.random.default_rng(seed)
    return timing.round_sig(rng.lognormal(np.log(0.0021), 0.3, n))


def round_trip(records):
    text = json.dumps(results_payload(RunEnv(device="cpu"), records), indent=1)
    return text, parse_results(text, "results.json")[1]


def test_a_long_row_is_stored_as_counts_and_reads_back_every_sample():
    lat = noop_like(100_000)
    rec = InferRecord(model="mlp", device="cpu", backend="noop", batch_size=1, n_calls=len(lat), latencies_ms=lat)
    text, (back,) = round_trip([rec])
    stored = json.loads(text)["records"][0]["latencies_ms"]
    assert set(stored) == {"values", "counts"} and sum(stored["counts"][0]) == len(lat)
    assert len(text) < 0.2 * len(json.dumps(lat, indent=1))  # a few thousand distinct values, not 100,000 lines
    assert sorted(back.latencies_ms) == sorted(lat)  # every sample, as measured
    mine, theirs = timing.latency_stats(np.asarray(lat) / 1e3, 1), timing.latency_stats(np.asarray(back.latencies_ms) / 1e3, 1)
    for name in ("p50_ms", "p90_ms", "p99_ms", "max_ms", "iqr_ms", "n_calls"):
        assert theirs[name] == pytest.approx(mine[name], rel=1e-12)
    other = noop_like(100_000, seed=1)
    assert median_ratio_ci(back.latencies_ms, other) == median_ratio_ci(lat, other)  # compare's bootstrap: the same
    b = InferRecord(model="mlp", device="cpu", backend="noop", batch_size=1, latencies_ms=other)
    got, want = judge(back, b, 0.05), judge(rec, b, 0.05)
    assert (got.slowdown, got.lo, got.hi, got.verdict) == (want.slowdown, want.lo, want.hi, want.verdict)
    _, (again,) = round_trip([back])
    assert again.latencies_ms == back.latencies_ms  # writing a loaded file again changes nothing


def test_each_process_keeps_its_own_samples():
    a, b = noop_like(30_000, seed=2), timing.round_sig(np.asarray(noop_like(20_000, seed=3)) * 2)
    rec = InferRecord(model="mlp", device="cpu", backend="noop", batch_size=1, latencies_ms=a + b,
                      samples_per_repeat=[len(a), len(b)])
    _, (back,) = round_trip([rec])
    procs = split_processes(back.latencies_ms, back.samples_per_repeat)
    assert [sorted(p) for p in procs] == [sorted(a), sorted(b)]


def test_short_or_varied_lists_stay_plain_lists():
    rec = ServeRecord(model="mlp", backend="eager", scenario="Server", latencies_ms=noop_like(1000))
    text, (back,) = round_trip([rec])
    assert isinstance(json.loads(text)["records"][0]["latencies_ms"], list) and back == rec
    varied = list(np.linspace(1.0, 2.0, 5000))  # every value distinct: counts would not be smaller
    assert samples.pack(varied) == varied


@pytest.mark.parametrize("stored, message", [
    ({"values": [[1.0]], "counts": [[0]]}, "whole numbers >= 1"),
    ({"values": [[1.0, 2.0]], "counts": [[3]]}, "as many counts as values"),
    ({"values": [[1.0]]}, "a list of numbers or"),
    ({"values": [[-1.0]], "counts": [[2]]}, "a finite number >= 0"),
    ({"values": [[1.0]], "counts": [[samples.MAX_SAMPLES + 1]]}, "expands to more than"),
])
def test_a_malformed_counts_form_is_one_line_naming_the_field(stored, message):
    rec = InferRecord(model="mlp", device="cpu", backend="noop", batch_size=1)
    data = results_payload(RunEnv(device="cpu"), [rec])
    data["records"][0]["latencies_ms"] = stored
    with pytest.raises(ValueError, match=message) as err:
        parse_results(json.dumps(data), "results.json")
    assert "latencies_ms" in str(err.value) and "\n" not in str(err.value)
