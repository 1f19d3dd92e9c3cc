"""``--profile`` and ``--profile-rows`` on bench.run: which rows get an op-level profile (torch-free: the command line
imports it before anything heavy)."""
from __future__ import annotations

import argparse
import fnmatch
from dataclasses import dataclass

from bench.profile.record import row_key, train_row_key
from zoo.errors import UserError


@dataclass(frozen=True)
class ProfileRequest:
    """Rows to profile: every row (``patterns`` empty) or those whose key matches one of ``patterns`` (fnmatch)."""

    patterns: tuple[str, ...] = ()

    def wants(self, key: str) -> bool:
        return not self.patterns or any(fnmatch.fnmatchcase(key, p) for p in self.patterns)


def add_profile_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", action="store_true",
                   help="after each inference row's timed calls (a training row's timed windows), profile extra calls with the backend's own profiler "
                        "(torch.profiler, ONNX Runtime, OpenVINO counters, TensorRT): OUT/<device>/profiles/<row "
                        "key>.json + the native trace, and a section in summary.md")
    p.add_argument("--profile-rows", metavar="KEYS",
                   help="profile only these rows (implies --profile): comma-separated row keys "
                        "MODEL.infer.BACKEND.bBATCH.PRECISION or MODEL.train.RUNG.bBATCH.PRECISION[.channels_last]"
                        "[.compile=MODE], shell-style wildcards allowed (lenet.infer.*.b1.*)")


def planned_keys(ctx, backends: dict) -> list[str]:
    """The keys of every inference and training row the context plans (``backends``: bench.backends.BACKENDS)."""
    keys = []
    if "infer" in ctx.phases:
        keys += [row_key(m, "infer", backends[sel].name, bs, backends[sel].precision)
                 for m in ctx.models for sel in ctx.backends for bs in ctx.infer_batch_sizes(m)]
    if "train" in ctx.phases:
        from bench.phases.train.phase import plan_rows

        keys += [train_row_key(m, p.row, ctx.train_batch_size(m), p.precision, p.channels_last, p.compile)
                 for m in ctx.models for p in plan_rows(ctx)]
    return keys


def profile_request(args: argparse.Namespace, ctx, backends: dict) -> ProfileRequest | None:
    """The run's ProfileRequest (None without --profile / --profile-rows); UserError when a pattern names no planned
    row or nothing can be profiled."""
    flag, rows = getattr(args, "profile", False), getattr(args, "profile_rows", None)  # a Namespace built elsewhere
    if not flag and rows is None:
        return None
    if (getattr(args, "repeat", None) or 1) > 1:  # each process writes into a folder of its own, merged as records only
        raise UserError("--profile takes its profiles in one process: run it with --repeat 1")
    keys = planned_keys(ctx, backends)
    if not keys:
        raise UserError("--profile profiles inference and training rows: add infer or train to --phases")
    text = rows if rows is None or isinstance(rows, str) else ",".join(rows)  # RunConfig takes a list too
    patterns = tuple(p.strip() for p in (text or "").split(",") if p.strip())
    if rows is not None and not patterns:
        raise UserError("--profile-rows is empty; name row keys such as " + keys[0])
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(k, pattern) for k in keys):
            raise UserError(f"--profile-rows {pattern}: matches no planned row (keys look like {keys[0]})")
    return ProfileRequest(patterns)
