"""The paired interval of a backend's accuracy change against eager fp32 (bench.model.accuracy.paired_change): only
the images the two classify differently decide it, it keeps a width when none do, and it covers about 95%."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.model.accuracy import paired_change


def pairs(both_right: int, both_wrong: int, gained: int, lost: int, seed: int = 0):
    """(backend right, eager right) over images in a seeded order with these four counts."""
    backend = [True] * both_right + [False] * both_wrong + [True] * gained + [False] * lost
    eager = [True] * both_right + [False] * both_wrong + [False] * gained + [True] * lost
    order = torch.randperm(len(backend), generator=torch.Generator().manual_seed(seed))
    return torch.tensor(backend)[order], torch.tensor(eager)[order]


def test_only_the_discordant_images_decide_the_change():
    a = paired_change(*pairs(900, 77, 8, 15))
    b = paired_change(*pairs(600, 377, 8, 15, seed=1))  # same discordant counts, other concordant split
    assert (a.gained, a.lost, a.samples) == (8, 15, 1000)
    assert a.delta_pts == pytest.approx(-0.7) == b.delta_pts
    assert (a.lo_pts, a.hi_pts) == pytest.approx((b.lo_pts, b.hi_pts))
    assert a.lo_pts < -0.7 < a.hi_pts and a.hi_pts > 0  # 8 against 15 images: no loss established


def test_no_disagreement_keeps_a_width_and_a_clear_loss_is_established():
    none = paired_change(*pairs(950, 50, 0, 0))
    assert none.delta_pts == 0 and none.lo_pts < 0 < none.hi_pts and none.hi_pts - none.lo_pts < 0.6
    loss = paired_change(*pairs(900, 70, 0, 30))
    assert loss.delta_pts == pytest.approx(-3.0) and loss.hi_pts < 0


def test_the_interval_covers_about_95_percent_of_seeded_test_sets():
    rng = np.random.default_rng(0)
    true_pts, hits, reps = (0.01 - 0.03) * 100, 0, 1000
    for counts in rng.multinomial(1000, [0.01, 0.03, 0.86, 0.10], size=reps):  # gained, lost, both right, both wrong
        change = paired_change(*pairs(int(counts[2]), int(counts[3]), int(counts[0]), int(counts[1])))
        hits += change.lo_pts <= true_pts <= change.hi_pts
    assert 0.93 <= hits / reps <= 0.97


def test_mismatched_vectors_are_an_error():
    with pytest.raises(ValueError):
        paired_change(torch.tensor([True]), torch.tensor([True, False]))


def infer_row(**kw):
    from bench.records import InferRecord

    base = dict(model="lenet", device="cpu", backend="onnxruntime-int8", precision="int8", batch_size=1,
                accuracy=0.981, accuracy_delta_pts=-0.2, accuracy_delta_lo_pts=-0.55, accuracy_delta_hi_pts=0.12,
                argmax_agreement=0.995, accuracy_ok=True, accuracy_budget_pts=1.0)
    return InferRecord(**{**base, **kw})


def test_trained_weights_on_real_data_show_the_change_with_its_interval():
    from bench.report.accuracy_text import accuracy_cell, delta_cell, glance_text

    r = infer_row(weights="checkpoint", data="real")
    assert (accuracy_cell(r), delta_cell(r)) == ("98.10%", "-0.20 [-0.55, +0.12]")
    assert glance_text(r) == "-0.20 pts [-0.55, +0.12]"
    assert delta_cell(infer_row(weights="checkpoint", data="real", backend="eager", precision="fp32")) == "reference"


@pytest.mark.parametrize("weights, data, why", [("random", "real", "random weights"),
                                                ("checkpoint", "synthetic", "synthetic data"),
                                                ("random", "synthetic", "random weights")])
def test_random_weights_or_synthetic_data_show_agreement_not_accuracy(weights, data, why):
    from bench.report.accuracy_text import accuracy_cell, delta_cell, glance_text

    r = infer_row(weights=weights, data=data)
    assert (accuracy_cell(r), delta_cell(r)) == ("", "")
    assert glance_text(r) == f"{why}: agreement, not accuracy (99.50%)"
