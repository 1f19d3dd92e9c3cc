"""summary.md's op-profile section, from OUT/<device>/profiles/ (bench.run --profile): per profiled row its top ops
by self time and how much of the row's timed p50 the profile accounts for, with the profiler's overhead as measured;
per model, the backends' top ops side by side at one batch size."""
from __future__ import annotations

import os

from tabulate import tabulate

from bench.profile.record import PROFILES_DIR, TOP_SHARE, OpStat, ProfileRecord, load_profiles

SIDE_BY_SIDE_TOP = 5
NAME_CHARS = 48

HOW = ("Each profile is taken after its row's timed calls, on as many extra calls again (never among the timed ones), "
       "by the backend's own profiler. *profile/call*: the ops' self time per call (the median over calls where the "
       "profiler marks each call; else the mean, as OpenVINO's counters and TensorRT's totals give it, which a busy "
       "machine's slow calls raise above a median); *of p50*: that over the row's timed p50 (above 100%: the "
       "profiler's own cost inflates what it times); *overhead*: the median wall time per call with the profiler on "
       "over the same number of calls with it off, back to back, minus 1. Self times on a CUDA row are its kernels' "
       "device times. Each row's native trace is beside its record in profiles/ (open a .trace.json in Perfetto).")


def short(name: str) -> str:
    return name if len(name) <= NAME_CHARS else name[: NAME_CHARS - 3] + "..."


def op_label(op: OpStat) -> str:
    kind = f" [{op.op_type}]" if op.op_type and op.op_type != op.name else ""
    return f"`{short(op.name)}`{kind}"


def row_line(p: ProfileRecord) -> str:
    if not p.ok:
        return f"**{p.label()}**: profile {p.status}: {p.reason}"
    parts = [f"**{p.label()}**: {p.profiler}, {p.calls} calls"]
    if p.profiled_ms_per_call is not None:
        cover = f" = {100 * p.coverage:.0f}% of the row's p50 {p.row_p50_ms:.4g} ms" if p.coverage is not None else ""
        parts.append(f"profile {p.profiled_ms_per_call:.4g} ms/call{cover}")
    if p.overhead is not None:
        parts.append(f"profiler overhead {100 * p.overhead:+.0f}% (wall {p.wall_on_ms:.4g} ms/call on vs "
                     f"{p.wall_off_ms:.4g} off, {p.calls} calls each)")
    if p.trace:
        parts.append(f"trace [{p.trace}]({PROFILES_DIR}/{p.trace})")
    return "; ".join(parts)


def top_table(p: ProfileRecord) -> list[str]:
    rows, cum = [], 0.0
    for op in p.top_ops():
        cum += op.share
        rows.append([op_label(op), f"{op.calls / max(p.calls, 1):.3g}", f"{op.self_ms / max(p.calls, 1):.4g}",
                     f"{100 * op.share:.1f}%", f"{100 * cum:.1f}%", op.input_shapes or ""])
    rest = len(p.primary_ops()) - len(rows)
    if rest > 0:
        rows.append([f"({rest} more ops)", "", "", f"{100 * (1 - cum):.1f}%", "100%", ""])
    return tabulate(rows, ["op [type]", "calls/call", "self ms/call", "share", "cumulative", "input shapes"],
                    tablefmt="github", disable_numparse=True).splitlines()


def side_by_side(profiles: list[ProfileRecord]) -> list[str]:
    """Per model: the top ops of each backend at the batch size most backends were profiled at (the smallest if tied)."""
    out = []
    for model in sorted({p.model for p in profiles}):
        mine = [p for p in profiles if p.model == model and p.ok]
        sizes = sorted({p.batch_size for p in mine}, key=lambda b: (-sum(p.batch_size == b for p in mine), b))
        if not sizes:
            continue
        cols = [p for p in mine if p.batch_size == sizes[0]]
        if len(cols) < 2:
            continue
        rows = [[str(i + 1)] + [f"{op_label(p.primary_ops()[i])} {100 * p.primary_ops()[i].share:.0f}%"
                                if i < len(p.primary_ops()) else "" for p in cols] for i in range(SIDE_BY_SIDE_TOP)]
        heads = ["#"] + [f"{p.backend}{'' if p.precision == 'fp32' else ' ' + p.precision} "
                         f"({p.profiled_ms_per_call:.3g} ms/call)" for p in cols]
        out += ["", f"**{model}** at batch {sizes[0]}: which op eats the time on each backend (share of its profile)", ""]
        out += tabulate(rows, heads, tablefmt="github", disable_numparse=True).splitlines()
    return out


def profile_section(out_dir: str) -> list[str]:
    """The section's lines ([] when the run has no profiles); a broken profile file is one line saying so."""
    try:
        profiles = list(load_profiles(os.path.join(out_dir, PROFILES_DIR)).values())
    except ValueError as exc:
        return ["## Op profiles", "", f"profiles not shown: {exc}"]
    if not profiles:
        return []
    out = ["## Op profiles (--profile)", "", HOW, "",
           f"Top ops per row, by self time, until they hold {100 * TOP_SHARE:.0f}% of the profiled time:"]
    for p in sorted(profiles, key=lambda p: (p.model, p.batch_size, p.backend, p.precision)):
        out += ["", row_line(p)]
        if p.ok and p.ops:
            out += [""] + top_table(p)
    side = side_by_side(profiles)
    if side:
        out += ["", "### Backends side by side"] + side
    return out
