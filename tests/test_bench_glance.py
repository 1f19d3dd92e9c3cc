"""bench.report.glance's backend answers (H2) and the shared interval formatter (bench.report.intervals): what
competed is named, the winner's margin carries its interval, no winner is crowned without a rival."""
from __future__ import annotations

from bench.records import InferRecord
from bench.report.glance import backend_answer
from bench.report.intervals import NO_DIFFERENCE, ratio_ci


def infer(backend, p50, bs=1, precision="fp32", **kw) -> InferRecord:
    base = dict(model="mlp", device="cpu", backend=backend, precision=precision, batch_size=bs, p50_ms=p50,
                iqr_ms=p50 * 0.05, n_calls=100, samples_per_s=bs / (p50 * 1e-3), accuracy_ok=True,
                accuracy_delta_pts=0.0, latencies_ms=[p50 * (1 + 0.01 * (i % 7 - 3)) for i in range(100)])
    base.update(kw)
    return InferRecord(**base)


def skipped(backend, reason, status="skipped") -> InferRecord:
    return InferRecord(model="mlp", device="cpu", backend=backend, batch_size=1, status=status, reason=reason)


def test_an_interval_holding_one_reads_no_difference_established():
    assert ratio_ci(1.34, 0.95, 1.91) == f"1.34x [0.95, 1.91] ({NO_DIFFERENCE})"
    assert ratio_ci(1.34, 1.10, 1.60) == "1.34x [1.10, 1.60]"
    assert ratio_ci(0.80, 0.70, 0.99) == "0.80x [0.70, 0.99]"  # wholly below 1: a difference, the other way
    assert ratio_ci(1.34) == "1.34x" and ratio_ci(None) == ""


def raced_rows():
    return [infer("eager", 2.0, speedup_vs_eager=1.0, race="dropped", race_leader="onnxruntime",
                  race_vs_leader=2.0, race_vs_leader_lo=1.9, race_vs_leader_hi=2.1, race_conf=0.99),
            infer("compile", 1.2, speedup_vs_eager=1.67, race="runner-up"),
            infer("onnxruntime", 1.0, speedup_vs_eager=2.0, speedup_vs_eager_lo=1.9, speedup_vs_eager_hi=2.1,
                  race="winner", race_leader="compile", race_vs_leader=1.2, race_vs_leader_lo=0.97,
                  race_vs_leader_hi=1.4, race_rounds=12, race_precision_pct=5.0, race_reached_pct=8.0,
                  race_target_met=False),
            infer("onnxruntime-int8", 0.5, precision="int8", accuracy_ok=False, accuracy_delta_pts=-3.0,
                  race="not eligible"),
            skipped("openvino", "openvino is not installed: pip install -e \".[openvino]\"")]


def test_the_answer_names_what_competed_the_runner_up_and_the_margin_with_its_interval():
    answer = backend_answer(raced_rows(), 1, recipe=False)
    assert answer.winner.backend == "onnxruntime" and answer.runner_up.backend == "compile"
    head, competed, race = answer.lines()
    assert head.startswith("- batch 1: **onnxruntime** 1.00 ms ± 5.0%") and "2.00x [1.90, 2.10] vs eager" in head
    assert competed == ("  - fastest of 4 measured (eager, compile, onnxruntime, onnxruntime-int8; "
                        "onnxruntime-int8 outside its accuracy budget, openvino not installed); runner-up "
                        f"compile, slower by 1.20x [0.97, 1.40] ({NO_DIFFERENCE})")
    assert "top two to +-8.00% (target +-5.00%: not met" in race
    assert "dropped eager: 2.00x [1.90, 2.10] the p50 of onnxruntime, 99% interval" in race


def test_no_winner_is_crowned_when_every_rival_was_skipped_or_dropped_by_the_budget():
    rows = [infer("eager", 2.0, speedup_vs_eager=1.0),
            skipped("compile", "budget: needs ~63 s that --budget 520 s could not hold"),
            skipped("onnxruntime", "boom", status="failed")]
    lines = backend_answer(rows, 1, recipe=False).lines()
    assert lines[0].startswith("- batch 1: eager: the only backend measured within its accuracy budget (")
    assert "**" not in lines[0]
    assert lines[1] == "  - competed: eager; compile left out (budget), onnxruntime failed"


def test_rows_timed_in_turn_get_a_margin_from_their_calls_and_say_they_were_not_raced():
    rows = [infer("eager", 2.0), infer("onnxruntime", 1.0)]
    _, competed = backend_answer(rows, 1, recipe=False).lines()
    assert "runner-up eager, slower by 2.00x [1.98, 2.02]" in competed  # wholly above 1: no "no difference"
    assert competed.endswith(" (not raced: rows timed in turn)")


def test_a_batch_without_rows_has_no_answer_and_none_within_budget_says_so():
    assert backend_answer(raced_rows(), 64, recipe=True) is None
    rows = [infer("onnxruntime-int8", 0.5, precision="int8", accuracy_ok=False)]
    assert backend_answer(rows, 1, recipe=False).lines() == [
        "- batch 1: no row within its accuracy budget (onnxruntime-int8 measured; onnxruntime-int8 "
        "outside its accuracy budget)"]
