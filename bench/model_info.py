"""The model under test: built (its checkpoint when one exists, else seeded random init), counted (parameters,
FLOPs per sample), and described in one "model" record.

FLOPs are counted by ``torch.utils.flop_counter`` on the meta device: a model built there holds no memory and runs
no kernel, so counting AlexNet costs milliseconds, can be done for every model when the run is planned (the budget
spreads time by FLOPs), and gives the same count as a real forward pass.
"""
from __future__ import annotations

import functools
import os

import torch
from torch.utils.flop_counter import FlopCounterMode

import zoo
from bench.context import BenchContext, ModelSession
from bench.records import ModelRecord
from zoo.checkpoint import load_checkpoint

CHECKPOINT_FILES = ("best.pt", "last.pt")  # what `python -m zoo.train` leaves in NAME/, best first


def find_checkpoint(name: str, folder: str | None) -> str | None:
    if not folder:
        return None
    for fname in CHECKPOINT_FILES:
        path = os.path.join(folder, name, fname)
        if os.path.isfile(path):
            return path
    return None


def _build(name: str) -> torch.nn.Module:
    spec = zoo.get_spec(name)
    # Random init, never a download: weights come from the checkpoint or the recorded seed.
    return zoo.get_model(name, **({"pretrained": "off"} if spec.uses_pretrained else {}))


@functools.cache
def flop_counts(name: str) -> tuple[float, float]:
    """(forward, forward + backward) FLOPs of one sample, counted on the meta device over a batch of 2."""
    spec = zoo.get_spec(name)
    with torch.device("meta"):
        model = _build(name)
        x = torch.empty(2, *spec.input_shape)
    counts = []
    for train in (False, True):
        model.train(train)
        counter = FlopCounterMode(display=False)
        with counter:
            if train:
                model(x).sum().backward()  # frozen layers get no weight gradients, as in training
            else:
                with torch.no_grad():
                    model(x)
        counts.append(counter.get_total_flops() / 2)
    return counts[0], counts[1]


def prepare_model(name: str, ctx: BenchContext) -> ModelSession:
    """The model in eval mode on the device: its trained checkpoint when ``ctx.checkpoints/NAME`` holds one, else
    random init from ``ctx.seed``. A broken checkpoint raises CheckpointError (one line; the driver records it)."""
    torch.manual_seed(ctx.seed)
    model = _build(name)
    session = ModelSession(name=name, model=model)
    path = find_checkpoint(name, ctx.checkpoints)
    if path:
        state = load_checkpoint(path, model_name=name)  # weights_only: a checkpoint cannot run code
        model.load_state_dict(state["model"])
        session.weights, session.checkpoint = "checkpoint", path
        session.checkpoint_acc, session.pretrained = state.get("test_acc"), bool(state.get("pretrained"))
    try:
        session.flops_per_sample, session.train_flops_per_sample = flop_counts(name)
    except Exception:  # noqa: BLE001 - a FLOP count is informative, not worth losing the model's measurements over
        pass
    session.model = model.to(ctx.device).eval()
    return session


def model_record(session: ModelSession, ctx: BenchContext) -> ModelRecord:
    spec = session.spec
    total, trainable = zoo.count_parameters(session.model)
    return ModelRecord(model=session.name, device=ctx.device.type, dataset=spec.dataset,
                       input_shape="x".join(map(str, spec.input_shape)), params_total=total,
                       params_trainable=trainable, flops_per_sample=session.flops_per_sample,
                       train_flops_per_sample=session.train_flops_per_sample, weights=session.weights,
                       checkpoint=session.checkpoint, checkpoint_acc=session.checkpoint_acc,
                       pretrained=session.pretrained, data=ctx.data_label(session.name))
