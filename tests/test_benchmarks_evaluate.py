"""`evaluate` end to end with a tiny model: against a one-by-one brute force, the cache, missing images."""

from __future__ import annotations

import shutil

import pytest
from PIL import Image

from cir.benchmarks import (EvalConfig, MissingImagesError, circo_metrics, cirr_metrics, evaluate, gallery_cache,
                            load_circo, load_cirr, run_evaluation)
from cir.fusion import fuse

from benchmarks_fixtures import excerpt_with_images, fashioniq_dataset, small_world, tiny_encoder  # noqa: F401

FUSIONS = [("slerp", 0.8), ("image", 0.3), ("text", 0.0), ("linear", 0.5)]


def _brute_rankings(encoder, data, fusions):
    """Plain encode_images on PIL images (no pipeline, no cache), full sort by (score desc, gallery order)."""
    ids = data.gallery
    g = encoder.encode_images([Image.open(data.image_path(i)).convert("RGB") for i in ids])
    pos = {x: k for k, x in enumerate(ids)}
    v = g[[pos[q.reference] for q in data.queries]]
    w = encoder.encode_texts([q.text for q in data.queries])
    return {(name, alpha): _sorted(fuse(name, v, w, alpha) @ g.T, ids) for name, alpha in fusions}


def _sorted(scores, ids):
    out = []
    for row in scores:
        out.append([ids[j] for j in sorted(range(len(ids)), key=lambda j: (-round(float(row[j]), 5), j))])
    return out


@pytest.mark.parametrize("bench", ["cirr", "circo"])
def test_evaluate_matches_brute_force(bench, small_world, tiny_encoder, tmp_path):
    report = evaluate(tiny_encoder, bench, small_world / bench, fusions=FUSIONS, cache_dir=tmp_path,
                      workers=0, progress=False)
    assert list(report["results"]) == ["slerp@0.80", "image@0.00", "text@1.00", "linear@0.50"]
    assert report["encoder"]["fingerprint"] == tiny_encoder.fingerprint
    data = (load_cirr if bench == "cirr" else load_circo)(small_world / bench)
    qs = data.queries
    brute = _brute_rankings(tiny_encoder, data, [("slerp", 0.8), ("linear", 0.5)])
    for (name, alpha), ranks in brute.items():
        if bench == "cirr":
            want = cirr_metrics(ranks, [q.target for q in qs], [q.reference for q in qs], [q.members for q in qs])
        else:
            want = circo_metrics(ranks, [q.targets for q in qs], [q.target for q in qs])
        got = report["results"][f"{name}@{alpha:.2f}"]
        assert got == pytest.approx(want, abs=1e-3)
    assert report["counts"]["queries"] == 16 and report["counts"]["skipped_queries"] == 0


def test_groups_seen_heldout(small_world, tiny_encoder, tmp_path):
    report = evaluate(tiny_encoder, "cirr", small_world / "cirr", fusions=[("slerp", 0.9)], cache_dir=tmp_path,
                      workers=0, progress=False)
    counts = report["group_counts"]
    assert counts["seen"] + counts["heldout"] == 16
    for name in ("seen", "heldout"):
        if counts[name]:
            assert set(report["groups"][name]["slerp@0.90"]) == set(report["results"]["slerp@0.90"])


def test_cache_reused_and_keyed_by_fingerprint(small_world, tiny_encoder, tmp_path, monkeypatch):
    first = evaluate(tiny_encoder, "circo", small_world / "circo", cache_dir=tmp_path, workers=0, progress=False)
    shards = list(tmp_path.rglob("*.npz"))
    assert len(shards) == 1 and shards[0].parent.name == tiny_encoder.fingerprint[:16]

    def boom(*a, **k):
        raise AssertionError("gallery re-embedded despite the cache")

    monkeypatch.setattr(gallery_cache, "embed_image_files", boom)
    again = evaluate(tiny_encoder, "circo", small_world / "circo", cache_dir=tmp_path, workers=0, progress=False)
    assert again["results"] == first["results"]
    monkeypatch.setattr(tiny_encoder, "fingerprint", "0" * 64)
    with pytest.raises(AssertionError, match="re-embedded"):
        evaluate(tiny_encoder, "circo", small_world / "circo", cache_dir=tmp_path, workers=0, progress=False)


def test_missing_images_error_and_skip(small_world, tiny_encoder, tmp_path):
    world = tmp_path / "w"
    shutil.copytree(small_world, world)
    data = load_cirr(world / "cirr")
    victim = data.queries[0].target
    data.image_path(victim).unlink()
    with pytest.raises(MissingImagesError, match=victim) as err:
        evaluate(tiny_encoder, "cirr", world / "cirr", workers=0, progress=False)
    assert [name for name, _ in err.value.missing] == [victim]
    report = evaluate(tiny_encoder, "cirr", world / "cirr", skip_missing=True, workers=0, progress=False)
    needing = [q for q in data.queries if victim in q.image_ids()]
    assert report["counts"]["skipped_queries"] == len(needing) >= 1
    assert report["counts"]["queries"] == 16 - len(needing)
    assert report["counts"]["gallery"] == len(data.gallery) - 1


def test_unreadable_image_counts_as_missing(small_world, tiny_encoder, tmp_path):
    world = tmp_path / "w"
    shutil.copytree(small_world, world)
    data = load_circo(world / "circo")
    data.image_path(data.gallery[5]).write_bytes(b"not a png")
    with pytest.raises(MissingImagesError, match="unreadable"):
        evaluate(tiny_encoder, "circo", world / "circo", workers=0, progress=False)


def test_excerpts_with_dummy_images(shared_formats, tiny_encoder, tmp_path):
    cirr = evaluate(tiny_encoder, "cirr", excerpt_with_images(shared_formats, tmp_path, "cirr"),
                    fusions=[("slerp", 0.9)], workers=0, progress=False)
    assert set(cirr["results"]["slerp@0.90"]) == {"R@1", "R@5", "R@10", "R@50", "Rs@1", "Rs@2", "Rs@3"}
    assert "groups" not in cirr
    circo = evaluate(tiny_encoder, "circo", excerpt_with_images(shared_formats, tmp_path, "circo"),
                     workers=0, progress=False)
    assert "mAP@10" in circo["results"]["slerp@0.80"]
    fiq_root = excerpt_with_images(shared_formats, tmp_path, "fashioniq")
    fiq = evaluate(tiny_encoder, "fashioniq", fiq_root, categories=["dress"], fusions=[("slerp", 0.8)],
                   workers=0, progress=False)
    res = fiq["results"]["slerp@0.80"]
    assert set(res) == {"dress/R@10", "dress/R@50", "R@10", "R@50"} and res["R@10"] == res["dress/R@10"]
    both = evaluate(tiny_encoder, "fashioniq", fiq_root, categories=["dress"], caption_order="both",
                    workers=0, progress=False)
    assert both["settings"]["caption_order"] == "both"


def test_bad_arguments(small_world, tiny_encoder):
    with pytest.raises(ValueError, match="fusion"):
        evaluate(tiny_encoder, "cirr", small_world / "cirr", fusions=[("mean", 0.5)])
    with pytest.raises(ValueError, match="alpha"):
        evaluate(tiny_encoder, "cirr", small_world / "cirr", fusions=[("slerp", 1.5)])
    with pytest.raises(ValueError, match="benchmark"):
        evaluate(tiny_encoder, "coco", small_world)
    with pytest.raises(ValueError, match="fashioniq"):
        evaluate(tiny_encoder, "cirr", small_world / "cirr", categories=["dress"])


def test_fashioniq_single_index_equals_the_per_category_galleries(tiny_encoder, tmp_path):
    root = fashioniq_dataset(tmp_path / "fiq")
    opts = dict(fusions=(("slerp", 0.8), ("image", 0.0), ("text", 1.0)), batch_size=1, workers=0, progress=False)
    per = run_evaluation(tiny_encoder, EvalConfig("fashioniq", root, **opts))
    one = run_evaluation(tiny_encoder, EvalConfig("fashioniq", root, single_index=True, **opts))
    assert one.report["results"] == per.report["results"]
    assert set(one.report["results"]["slerp@0.80"]) >= {"dress/R@10", "shirt/R@50", "toptee/R@10", "R@10", "R@50"}
    splits = {p.data.part: set(p.data.gallery) for p in per.parts}
    union = set().union(*splits.values())
    assert one.report["settings"]["single_index"] and one.report["counts"]["gallery"] == len(union) < 3 * 14 + 2
    for a, b in zip(per.parts, one.parts):
        assert a.data.part == b.data.part and a.rankings == b.rankings
        # each category's queries ranked only their category's images, out of the whole union
        assert all(set(r) <= splits[a.data.part] for r in b.rankings["image@0.00"].values())
    with pytest.raises(ValueError, match="fashioniq only"):
        EvalConfig("cirr", root, single_index=True)
