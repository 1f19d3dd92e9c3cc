"""summary.md's "Latency under load" section: the serve phase's rows (bench.phases.serve.phase), one table per model, its
Server probes, and the checks that tie the scenarios together. Reads records only; nothing is recomputed except what
a cell needs to show (a count or the largest of a row's raw latencies, and ratios of two rows' fields).
"""
from __future__ import annotations

from bench.records import BACKEND_NAMES, InferRecord, Record, ServeRecord
from bench.report.selection import models_of, of_type, ordered
from bench.report.tables import num, pct, percentile_cell, ratio, table

SERVE_HEADERS = ["backend", "precision", "SingleStream p90 ms", "closed-loop b=1 p90 ms", "MultiStream p99 ms",
                 "Server max qps, batching", "Server max qps, off", "batching gain", "Offline samples/s",
                 "accuracy under load", "agreement with closed loop"]


def cell(r: ServeRecord | None, q: int) -> str:
    """A latency percentile with LoadGen's verdict on the run (or the row's status)."""
    if r is None:
        return ""
    if not r.ok:
        return f"**{r.status}**"
    n = len(r.latencies_ms)
    value = percentile_cell(r.p90_ms if q == 90 else r.p99_ms, n, max(r.latencies_ms, default=None), q)
    return f"{value} ({verdict_word(r)})" if value else verdict_word(r)


def verdict_word(r: ServeRecord) -> str:
    return (r.loadgen_result or "no verdict").split(":")[0]


def rate_cell(r: ServeRecord | None) -> str:
    if r is None:
        return ""
    if not r.ok:
        return f"**{r.status}**"
    if r.max_rate_qps is None:
        return "none met the bound"
    above = [p["target_qps"] for p in r.probes if not p.get("met_bound") and p["target_qps"] > r.max_rate_qps]
    bracket = f" (< {num(min(above))})" if above else " (no failing probe above)"
    return num(r.max_rate_qps) + bracket


def accuracy_cells(r: ServeRecord | None) -> list[str]:
    if r is None:
        return ["", ""]
    if r.accuracy is None:
        return [f"**{r.status}**", r.reason or ""]
    agree = f"{pct(r.argmax_agreement, 2)} of {r.agreement_samples:,}"
    if not r.ok:
        agree = f"**FAIL** {agree}"
    return [f"{pct(r.accuracy, 2)} (closed loop {pct(r.closed_loop_accuracy, 2)})", agree]


def closed_loop_p90(records: list[Record], r: ServeRecord) -> str:
    """The same backend's closed-loop batch-1 p90 from this run's infer phase, when it ran."""
    for rec in of_type(records, InferRecord, ok_only=True):
        if (rec.model, rec.backend, rec.precision, rec.batch_size) == (r.model, r.backend, r.precision, 1):
            return percentile_cell(rec.p90_ms, rec.n_calls, rec.max_ms, 90)
    return ""


def backend_rows(records: list[Record], model: str) -> dict[tuple, dict[tuple, ServeRecord]]:
    """(backend, precision) -> (scenario, mode, batching) -> row, backends in BACKEND_NAMES order."""
    rows = [r for r in of_type(records, ServeRecord) if r.model == model]
    out: dict[tuple, dict[tuple, ServeRecord]] = {}
    for name in ordered((r.backend for r in rows), BACKEND_NAMES):
        for r in rows:
            if r.backend == name:
                out.setdefault((r.backend, r.precision), {})[(r.scenario, r.mode, r.batching)] = r
    return out


def pick(rows: dict[tuple, ServeRecord], scenario: str, *, off: bool | None = None,
         mode: str = "PerformanceOnly") -> ServeRecord | None:
    for (sc, md, batching), r in rows.items():
        if sc == scenario and md == mode and (off is None or (batching == "off") == off):
            return r
    return None


def model_table(records: list[Record], model: str) -> tuple[str, list[str]]:
    body, checks = [], []
    for (backend, precision), rows in backend_rows(records, model).items():
        on, off = pick(rows, "Server", off=False), pick(rows, "Server", off=True)
        offline = pick(rows, "Offline")
        ss = pick(rows, "SingleStream")
        gain = on.max_rate_qps / off.max_rate_qps if on and off and on.max_rate_qps and off.max_rate_qps else None
        body.append([backend, precision, cell(ss, 90), closed_loop_p90(records, ss) if ss else "",
                     cell(pick(rows, "MultiStream"), 99), rate_cell(on), rate_cell(off), ratio(gain),
                     num(offline.samples_per_s) if offline and offline.ok else cell(offline, 99),
                     *accuracy_cells(pick(rows, "Offline", mode="AccuracyOnly"))])
        checks += server_checks(backend, on, offline) + server_checks(backend, off, None)
    return table(body, SERVE_HEADERS), checks


def server_checks(backend: str, r: ServeRecord | None, offline: ServeRecord | None) -> list[str]:
    """Plain-language checks of one Server row: within the bound at its rate, over it at 1.5x, below Offline."""
    if r is None or not r.ok or r.max_rate_qps is None:
        return []
    bound = r.settings.get("latency_bound_ms")
    best = next((p for p in r.probes if p["target_qps"] == r.max_rate_qps), {})
    check = next((p for p in r.probes if p.get("role") == "check"), None)
    ours = num(best.get("p99_ms")) or f"not printed (n={best.get('n_queries', 0):,} < 1,000)"
    line = (f"`{backend}` Server ({r.batching}): p99 {ours}, LoadGen's {num(best.get('loadgen_p99_ms'))} ms, at "
            f"{num(r.max_rate_qps)}/s, bound {num(bound)} ms")
    if check:
        line += (f"; at {num(check['target_qps'])}/s (check) p99 {num(check.get('loadgen_p99_ms'))} ms, "
                 f"{'within' if check.get('met_bound') else 'over'} the bound, {check.get('loadgen_result')}")
    if offline is not None and offline.ok and offline.samples_per_s:
        below = r.max_rate_qps <= offline.samples_per_s
        line += f"; Offline {num(offline.samples_per_s)}/s {'>=' if below else '**<**'} the Server rate"
    return [line]


def probe_table(records: list[Record], model: str) -> str:
    body = []
    for r in of_type(records, ServeRecord, ok_only=True):
        if r.model != model or r.scenario != "Server":
            continue
        for p in sorted(r.probes, key=lambda p: p["target_qps"]):
            body.append([r.backend, r.batching, num(p["target_qps"]), p.get("role"), num(p.get("p99_ms")),
                         num(p.get("loadgen_p99_ms")), num(p.get("samples_per_s")), num(p.get("mean_batch")),
                         f"{p.get('n_queries', 0):,}", "yes" if p.get("met_bound") else "**no**",
                         p.get("loadgen_result")])
    return table(body, ["backend", "batching", "offered qps", "probe", "p99 ms", "LoadGen p99 ms", "samples/s",
                        "mean batch", "queries", "p99 within bound", "LoadGen result"]) if body else ""


def serve_section(records: list[Record]) -> list[str]:
    out: list[str] = []
    for model in models_of(of_type(records, ServeRecord)):
        mine = [r for r in of_type(records, ServeRecord, ok_only=True) if r.model == model]
        bounds = {(r.settings.get("latency_bound_ms"), r.settings.get("latency_bound_source"))
                  for r in mine if r.scenario == "Server"}
        bound_text = "; ".join(f"{num(b)} ms ({src})" for b, src in bounds if b is not None) or "not run"
        provenance = next((r.provenance for r in mine if r.provenance), "?")
        shortened = any(r.settings.get("shortened") for r in mine)
        tab, checks = model_table(records, model)
        out += ["", f"### {model}: Server p99 bound {bound_text}; {provenance}"
                + ("; SHORTENED for the budget" if shortened else ""), "", tab]
        if checks:
            out += ["", "Checks:", "", *(f"- {c}" for c in checks)]
        probes = probe_table(records, model)
        if probes:
            out += ["", f"Server probes of {model} (every offered rate, in order of rate):", "", probes]
    if not out:
        return []
    return ["## Latency under load (MLPerf LoadGen)", "",
            "Each cell is LoadGen's own metric of one short test (VALID / INVALID as its summary says; with these "
            "short runs its early-stopping rule often says INVALID) from its per-query latencies (scheduled issue "
            "to the query's last completion, from its trace). *closed-loop b=1 p90* is the infer phase's row of the "
            "same backend, when it ran: the difference to SingleStream is LoadGen's and the worker hand-off's cost "
            "(the `noop` backend's row is that cost alone). *Server max qps* is the highest probed Poisson rate "
            "whose p99 LoadGen found within the bound, with the lowest failing rate above it; *batching gain* "
            "divides batching on by off. Accuracy under load is LoadGen's AccuracyOnly run, decoded and scored; it "
            "must agree 100% with the same backend's closed-loop predictions.", *out]
