"""Each benchmark metric against hand-computed cases (docs/method.md, section 4)."""

from __future__ import annotations

import numpy as np
import pytest

from cir.benchmarks import (circo_average_precision, circo_metrics, cirr_metrics, cirr_subset_ranking,
                            fashioniq_metrics, recall_at_k, remove_reference)


def test_recall_at_k_single_target():
    rankings = [["a", "b", "c"], ["c", "a", "b"], ["b", "c", "a"]]
    assert recall_at_k(rankings, ["a", "a", "a"], [1, 2, 3]) == pytest.approx({1: 100 / 3, 2: 200 / 3, 3: 100.0})


def test_cirr_removes_reference_present_in_ranking():
    # Reference first: with it removed, the target moves from rank 3 to rank 2.
    ranking = ["ref", "x", "tgt", "y"]
    assert remove_reference(ranking, "ref") == ["x", "tgt", "y"]
    m = cirr_metrics([ranking], ["tgt"], ["ref"], [["ref", "x", "tgt", "y", "z", "w"]])
    assert m["R@1"] == 0.0 and m["R@5"] == 100.0 and m["R@50"] == 100.0


def test_cirr_recall_at_1_counts_target_after_reference():
    m = cirr_metrics([["ref", "tgt"]], ["tgt"], ["ref"], [["ref", "tgt"]])
    assert m["R@1"] == 100.0


def test_cirr_subset_keeps_members_in_global_order_without_reference():
    members = ["ref", "m1", "tgt", "m2", "m3", "m4"]
    ranking = ["x", "m2", "ref", "tgt", "y", "m1", "m4", "m3"]
    assert cirr_subset_ranking(ranking, members, "ref") == ["m2", "tgt", "m1", "m4", "m3"]
    m = cirr_metrics([ranking], ["tgt"], ["ref"], [members])
    assert (m["Rs@1"], m["Rs@2"], m["Rs@3"]) == (0.0, 100.0, 100.0)
    assert (m["R@1"], m["R@5"]) == (0.0, 100.0)


def test_cirr_subset_rankings_argument_matches_full_ranking():
    members = [["r1", "a", "t1", "b"], ["r2", "t2", "c", "d"]]
    full = [["a", "r1", "b", "t1", "z"], ["t2", "c", "r2", "d"]]
    subsets = [cirr_subset_ranking(f, m, r) for f, m, r in zip(full, members, ["r1", "r2"])]
    a = cirr_metrics(full, ["t1", "t2"], ["r1", "r2"], members)
    b = cirr_metrics(full, ["t1", "t2"], ["r1", "r2"], members, subset_rankings=subsets)
    assert a == b
    assert a["Rs@1"] == 50.0 and a["Rs@3"] == 100.0


def test_circo_ap_hand_computed_multiple_ground_truths():
    # labels 0 1 0 1 -> precisions 0, 1/2, 0, 2/4; AP@5 = (0.5 + 0.5) / min(3, 5)
    pred = ["a", "g1", "b", "g2", "c"]
    assert circo_average_precision(pred, ["g1", "g2", "g3"], 5) == pytest.approx(1.0 / 3)
    # AP@2 only sees the first hit: 0.5 / min(3, 2)
    assert circo_average_precision(pred, ["g1", "g2", "g3"], 2) == pytest.approx(0.25)


def test_circo_ap_fewer_ground_truths_than_k():
    assert circo_average_precision(["g1", "a", "b"], ["g1"], 50) == pytest.approx(1.0)
    assert circo_average_precision(["a", "g1", "b"], ["g1"], 5) == pytest.approx(0.5)


def test_circo_reference_is_not_removed():
    # The reference is a legal prediction in CIRCO and may even be a ground truth.
    assert circo_average_precision(["ref", "g"], ["ref", "g"], 5) == pytest.approx(1.0)


def test_circo_duplicates_are_an_error():
    with pytest.raises(ValueError, match="duplicate"):
        circo_average_precision(["a", "a", "g"], ["g"], 5)


def test_circo_metrics_mean_and_target_recall():
    preds = [["g1", "x", "g2"] + [f"n{i}" for i in range(47)], ["x", "y", "t"] + [f"n{i}" for i in range(47)]]
    m = circo_metrics(preds, [["g1", "g2"], ["t"]], ["g2", "t"])
    # q1: AP@5 = (1 + 2/3)/2 ; q2: AP@5 = (1/3)/1
    assert m["mAP@5"] == pytest.approx(100 * ((1 + 2 / 3) / 2 + 1 / 3) / 2)
    # Recall is on the target only: q1's target g2 is at rank 3, q2's at rank 3.
    assert m["R@5"] == 100.0
    assert set(m) == {"mAP@5", "mAP@10", "mAP@25", "mAP@50", "R@5", "R@10", "R@25", "R@50"}


def test_circo_ap_matches_reference_formula_on_random_cases():
    rng = np.random.default_rng(0)
    for _ in range(50):
        pred = [str(i) for i in rng.permutation(200)[:50]]
        gts = [str(i) for i in rng.choice(200, size=rng.integers(1, 15), replace=False)]
        labels = np.array([p in gts for p in pred], dtype=float)
        for k in (5, 10, 25, 50):
            # Plain loop: precision at each hit position within the first k.
            total = sum(labels[:i + 1].sum() / (i + 1) for i in range(k) if labels[i])
            assert circo_average_precision(pred, gts, k) == pytest.approx(total / min(len(gts), k))


def test_fashioniq_per_category_and_mean():
    per = {
        "dress": ([["t"] + ["x"] * 0, ["a"] * 10 + ["t"]], ["t", "t"]),  # ranks 1 and 11
        "shirt": ([["b"] * 60], ["t"]),  # miss
    }
    m = fashioniq_metrics(per)
    assert m["dress/R@10"] == 50.0 and m["dress/R@50"] == 100.0
    assert m["shirt/R@10"] == 0.0 and m["shirt/R@50"] == 0.0
    assert m["R@10"] == 25.0 and m["R@50"] == 50.0


def test_lengths_must_match():
    with pytest.raises(ValueError):
        recall_at_k([["a"]], ["a", "b"], [1])
