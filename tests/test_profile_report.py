"""What a reader sees of the profiles: --profile / --profile-rows on the command line (a bad pattern is one error
line), summary.md's op-profile section, and ``bench.compare --explain``'s op-level diff of two runs."""
from __future__ import annotations

import argparse
import types

import pytest
import torch

from bench.backends import BACKENDS
from bench.context import BenchContext
from bench.profile import explain
from bench.profile.record import OpStat, ProfileRecord, row_key, save_profile
from bench.profile.request import ProfileRequest, add_profile_arguments, profile_request
from bench.profile.section import profile_section
from bench.records import InferRecord
from zoo.errors import UserError


def ctx(phases=("infer",)) -> BenchContext:
    return BenchContext(device=torch.device("cpu"), models=["lenet", "mlp"], phases=list(phases),
                        backends=["eager", "onnxruntime-int8:int8"], batch_sizes=[1, 64])


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_profile_arguments(p)
    p.add_argument("--repeat", type=int)
    return p.parse_args(list(argv))


def test_profile_request_from_the_command_line():
    assert profile_request(parse(), ctx(), BACKENDS) is None
    assert profile_request(parse("--profile"), ctx(), BACKENDS) == ProfileRequest()
    req = profile_request(parse("--profile-rows", "lenet.infer.*.b1.*, mlp.infer.onnxruntime-int8.b64.int8"),
                          ctx(), BACKENDS)
    assert req.wants("lenet.infer.eager.b1.fp32") and req.wants("mlp.infer.onnxruntime-int8.b64.int8")
    assert not req.wants("lenet.infer.eager.b64.fp32")


@pytest.mark.parametrize("argv, phases, fragment", [
    (("--profile-rows", "lenet.infer.openvino.b1.fp32"), ("infer",), "matches no planned row"),
    (("--profile-rows", " , "), ("infer",), "is empty"),
    (("--profile",), ("parity",), "add infer or train to --phases"),
    (("--profile", "--repeat", "3"), ("infer",), "--repeat 1"),
])
def test_a_bad_profile_request_is_a_user_error(argv, phases, fragment):
    with pytest.raises(UserError, match=fragment):
        profile_request(parse(*argv), ctx(phases), BACKENDS)


def test_bench_run_says_a_bad_pattern_in_one_line(capsys, tmp_path):
    from bench.run import main

    code = main(["--models", "lenet", "--phases", "infer", "--backends", "eager", "--profile-rows", "nope",
                 "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: --profile-rows nope")


def profile(backend: str, ops: list[tuple[str, float]], p50: float, *, calls: int = 10, bs: int = 1,
            precision: str = "fp32", overhead: float = 0.1) -> ProfileRecord:
    """A profile whose ops take ``ms`` per call each."""
    rec = ProfileRecord(row=row_key("lenet", "infer", backend, bs, precision), model="lenet", phase="infer",
                        backend=backend, precision=precision, batch_size=bs, device="cpu", profiler="test profiler",
                        calls=calls, row_p50_ms=p50, wall_on_ms=p50 * (1 + overhead), wall_off_ms=p50,
                        overhead=overhead, trace=None)
    total = sum(ms for _, ms in ops)
    rec.ops = [OpStat(name, name.split("/")[0], "cpu", calls, ms * calls, ms / total) for name, ms in ops]
    rec.profiled_ms_per_call = total
    rec.coverage = total / p50
    return rec


def test_summary_section_lists_top_ops_to_80_percent_and_states_overhead(tmp_path):
    folder = tmp_path / "profiles"
    save_profile(profile("eager", [("Conv/a", 0.5), ("Pool/b", 0.3), ("Gemm/c", 0.15), ("Relu/d", 0.05)], 1.0),
                 str(folder))
    save_profile(profile("onnxruntime", [("Conv/x", 0.2), ("Gemm/y", 0.1)], 0.25), str(folder))
    skipped = profile("noop", [], 0.01)
    skipped.status, skipped.reason, skipped.ops = "skipped", "the noop backend runs nothing to profile", []
    save_profile(skipped, str(folder))
    text = "\n".join(profile_section(str(tmp_path)))
    assert "**lenet eager b=1**" in text and "= 100% of the row's p50 1 ms" in text
    assert "profiler overhead +10%" in text
    eager_table = text.split("**lenet eager b=1**")[1].split("**lenet noop")[0]
    assert "`Conv/a`" in eager_table and "`Gemm/c`" in eager_table and "`Relu/d`" not in eager_table
    assert "(1 more ops)" in eager_table  # Conv + Pool = 80% is reached with Pool; at least 3 are listed
    assert "profile skipped: the noop backend runs nothing to profile" in text
    assert "### Backends side by side" in text and "onnxruntime (0.3 ms/call)" in text
    assert profile_section(str(tmp_path / "nothing")) == []


def test_explain_names_ops_that_grew_appeared_and_vanished_with_their_share():
    a = profile("onnxruntime", [("conv1", 0.10), ("conv2", 0.20), ("fused_gemm", 0.05)], 0.40)
    b = profile("onnxruntime", [("conv1", 0.10), ("conv2", 0.50), ("gemm", 0.12), ("relu", 0.03)], 0.80)
    e = explain.explain_row(a.row, a, b)
    by = {c.name: c for c in e.changes}
    assert e.row_change_ms == pytest.approx(0.40)
    assert (by["conv2"].kind, by["conv2"].delta_ms) == ("grew", pytest.approx(0.30))
    assert by["conv2"].share_of_change == pytest.approx(0.75)
    assert by["gemm"].kind == "appeared" and by["fused_gemm"].kind == "vanished"
    assert by["conv1"].kind == "same"
    assert e.profile_change_ms == pytest.approx(0.40) and e.accounted == pytest.approx(1.0)  # 0.3 + 0.12 + 0.03 - 0.05
    assert [c.name for c in e.changes][0] == "conv2"
    text = explain.render([e], "")
    assert "= 100% of the row's change" in text and "appeared" in text and "vanished" in text


def test_explain_picks_the_flagged_rows_and_says_when_a_profile_is_missing(tmp_path):
    for run, p50 in (("A", 0.4), ("B", 0.8)):
        save_profile(profile("eager", [("conv", p50)], p50), str(tmp_path / run / "profiles"))
    flagged = InferRecord(model="lenet", device="cpu", backend="eager", batch_size=1)
    other = InferRecord(model="lenet", device="cpu", backend="onnxruntime", batch_size=1)
    changes = [types.SimpleNamespace(record=flagged, verdict="regression"),
               types.SimpleNamespace(record=other, verdict="no change")]
    paths = [str(tmp_path / run / "results.json") for run in "AB"]
    out = explain.explain_runs(*paths, changes, "")
    assert [e.row for e in out] == ["lenet.infer.eager.b1.fp32"] and out[0].changes[0].delta_ms == pytest.approx(0.4)
    named = explain.explain_runs(*paths, changes, "lenet.infer.onnxruntime.*")
    assert named[0].missing.startswith("no profile of this row in A")
    with pytest.raises(ValueError, match="no row of either run matches"):
        explain.explain_runs(*paths, changes, "alexnet.*")


def write_run(folder, p50: float, ops: list[tuple[str, float]]) -> str:
    """A results.json with one eager row around ``p50`` ms (1000 calls) and its profile beside it."""
    import json

    import numpy as np

    from bench.records import RunEnv
    from bench.report.files import results_payload

    latencies = np.random.default_rng(int(p50 * 100)).lognormal(np.log(p50), 0.05, 1000).tolist()
    rec = InferRecord(model="lenet", device="cpu", backend="eager", batch_size=1, latencies_ms=latencies)
    env = RunEnv(device="cpu", device_name="test cpu", torch="2.x", threads=2, complete=True)
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps(results_payload(env, [rec])))
    save_profile(profile("eager", ops, p50), str(folder / "profiles"))
    return str(folder / "results.json")


def test_compare_explain_prints_the_op_level_diff_after_the_table(tmp_path, capsys):
    from bench.analysis import compare

    a = write_run(tmp_path / "A", 1.0, [("aten::mkldnn_convolution", 0.6), ("aten::addmm", 0.3)])
    b = write_run(tmp_path / "B", 2.0, [("aten::mkldnn_convolution", 1.5), ("aten::addmm", 0.3),
                                        ("aten::copy_", 0.1)])
    from test_bench_compare import (
        flat_profile,  # processes that never disagree: the rule on the runs' own medians
    )

    flat = flat_profile(a, b)
    code = compare.main([a, b, "--noise-profile", flat, "--explain"])
    out = capsys.readouterr().out
    assert code == 0 and "regression" in out
    explained = out.split("explain lenet.infer.eager.b1.fp32:")[1]
    assert "(+1 ms); the ops' self time per call +1 ms = 100% of the row's change" in explained
    assert "grew" in explained and "+90%" in explained and "appeared" in explained
    code = compare.main([a, b, "--noise-profile", flat, "--explain", "mlp.*"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: --explain mlp.*: no row of either run matches")


def test_the_budget_prices_a_profiled_row_its_extra_calls_and_twin_build():
    from bench.phases.infer import InferPhase

    prices = types.SimpleNamespace(models={}, build_for=lambda what, name: 1.0)

    def costs(request):
        c = ctx()
        c.backends, c.profile = ["eager", "onnxruntime"], request
        rows, _ = InferPhase().row_costs("lenet", c, prices)
        return {r.label: r.floor_s for r in rows}

    plain = costs(None)
    profiled = costs(ProfileRequest(("lenet.infer.onnxruntime.b1.fp32", "lenet.infer.eager.b64.fp32")))
    extra = {name: profiled[name] - plain[name] for name in plain}
    assert extra["eager b=1"] == 0.0 and extra["onnxruntime b=64"] == 0.0  # rows not profiled cost the same
    assert extra["eager b=64"] > 0.2  # its calls and the trace
    assert extra["onnxruntime b=1"] > 1.0  # + the profiling session's build
