"""summary.md reads in one screen first (bench.report.overview, bench.report.files): the answers before any table,
no prose line over 200 characters, no table cell over 120, and one definition of a row behind every count."""
from __future__ import annotations

from test_bench_report import make_env, sample_records

from bench.records import InferRecord, ModelRecord, TrainRecord
from bench.report import files, overview, tables


def long_records():
    reason = "budget: needs ~63 s that --budget 520 s could not hold; measure it with `python -m bench.run " + \
        "--models mlp --phases infer --backends compile --batch-sizes 64 --budget none --out results` " * 2
    return sample_records() + [InferRecord(model="mlp", device="cpu", backend="compile", batch_size=64,
                                           status="skipped", reason=reason)]


def test_no_prose_line_over_200_and_no_cell_over_120():
    env = make_env(notes={"why": "a long note " * 40, "budget": {"kept_rows": 1}})
    text = files.render_summary(env, long_records())
    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            assert max(len(c) for c in cells) <= tables.MAX_CELL, line[:80]
        else:
            assert len(line) <= overview.MAX_LINE, line[:80]
    assert "see [1] below" in text and "\n[1] budget: needs ~63 s" in text  # the long cell moved under its table


def test_the_answers_come_first_and_the_settings_after_the_tables():
    text = files.render_summary(make_env(), sample_records())
    at = {h: text.index(h) for h in ("## At a glance", "## This run", "## Inference latency", "## Settings",
                                     "## How these numbers were measured", "## Failed and skipped")}
    assert list(at) == sorted(at, key=at.get)
    assert text.index("## At a glance") < text.index("\n|")  # no table before the answers


def test_one_definition_of_a_row_behind_every_count():
    recs = [ModelRecord(model="mlp", device="cpu"), TrainRecord(model="mlp", device="cpu", row="fast"),
            InferRecord(model="mlp", device="cpu", backend="eager", status="skipped", reason="budget: needs 3 s"),
            InferRecord(model="mlp", device="cpu", backend="openvino", status="skipped", reason="not installed"),
            InferRecord(model="mlp", device="cpu", backend="compile", status="failed", reason="boom")]
    counts = overview.row_counts(recs)
    assert (counts.rows, counts.measured, counts.budget, counts.skipped, counts.failed) == (5, 2, 1, 1, 1)
    assert counts.text() == "5 rows: 2 measured, 1 left out for the budget, 1 skipped otherwise, 1 failed"
    # the settings' "rows done" counts the same records: done_rows is len(records) (bench.run.save)
    text = files.render_summary(make_env(done_rows=5, planned_rows=5), recs)
    assert "- 5 rows: 2 measured" in text and "| rows done" in text and "5 of 5 planned" in text
    assert "planned rows measured" not in text  # the budget's own count of its rows is not printed beside it


def test_wrapping_keeps_lists_quotes_tables_and_code_intact():
    word = "word " * 60
    lines = overview.wrap_prose([f"- {word}", f"> {word}", "| " + "x" * 300 + " |", "```", word * 2, "```"])
    bullet = [ln for ln in lines if ln.startswith(("- ", "  "))]
    assert bullet[0].startswith("- word") and all(ln.startswith("  word") for ln in bullet[1:])
    assert all(len(ln) <= overview.WRAP_AT for ln in bullet)
    assert [ln for ln in lines if ln.startswith(">")][1].startswith("> word")
    assert "| " + "x" * 300 + " |" in lines and word * 2 in lines  # tables and code blocks are left as they are


def test_a_scaling_table_of_skipped_rows_only_is_left_to_failed_and_skipped():
    from bench.records import ScaleRecord, not_ok

    skipped = [not_ok(ScaleRecord, "mlp", "cpu", "budget: needs 33 s", status="skipped", processes=p, batch_size=64)
               for p in (1, 2)]
    assert tables.scale_section(skipped) == []
    measured = skipped + [ScaleRecord(model="lenet", device="cpu", processes=1, batch_size=64, samples_per_s=9.0)]
    text = "\n".join(tables.scale_section(measured))
    assert "### lenet" in text and "### mlp" not in text
