"""`cir eval` end to end: outputs in --out, server-format submission files, --compare, clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from evaluation.cli import main, parse_fusions, parse_sweep

from benchmarks_fixtures import excerpt_with_images, fashioniq_dataset, small_world  # noqa: F401


def _common(tiny_clip_dir, tmp_path) -> list[str]:
    return ["--model", str(tiny_clip_dir), "--workers", "0", "--no-progress", "--cache-dir", str(tmp_path / "cache")]


def validate_cirr_submission(recall: dict, subset: dict, queries: list[dict]) -> None:
    """CIRR server format (docs/method.md, section 4): version/metric entries, top 50 and top 3 per pairid."""
    assert recall["version"] == subset["version"] == "rc2"
    assert recall["metric"] == "recall" and subset["metric"] == "recall_subset"
    pairs = {str(q["pairid"]) for q in queries}
    assert set(recall) - {"version", "metric"} == pairs == set(subset) - {"version", "metric"}
    for q in queries:
        top, sub = recall[str(q["pairid"])], subset[str(q["pairid"])]
        assert len(top) == 50 and len(set(top)) == 50 and q["reference"] not in top
        assert all(isinstance(x, str) for x in top)
        assert len(sub) == 3 and len(set(sub)) == 3
        assert set(sub) <= set(q["img_set"]["members"]) - {q["reference"]}


def validate_circo_submission(sub: dict, queries: list[dict]) -> None:
    """CIRCO server format: {"<id>": [50 distinct integer image ids]} for every query."""
    assert set(sub) == {str(q["id"]) for q in queries}
    for ids in sub.values():
        assert len(ids) == 50 and len(set(ids)) == 50 and all(isinstance(i, int) for i in ids)


def test_cirr_sweep_writes_everything(small_world, tiny_clip_dir, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["--benchmark", "cirr", "--root", str(small_world / "cirr"), "--fusion", "all",
               "--alpha-sweep", "0:1:0.5", "--out", str(out), *_common(tiny_clip_dir, tmp_path)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| slerp@0.50 |" in printed and "best slerp" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    keys = ["image@0.00", "text@1.00"] + [f"{f}@{a:.2f}" for f in ("linear", "slerp") for a in (0, 0.5, 1)]
    assert list(metrics["results"]) == keys
    assert metrics["command"][:2] == ["cir", "eval"] and metrics["files"]["plot"] == "alpha_sweep.png"
    assert set(metrics["groups"]) <= {"seen", "heldout"} and metrics["best"]["slerp"]["metric"] == "R@1"
    assert (out / "alpha_sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert "| fusion | queries | R@1 |" in (out / "results.md").read_text()
    queries = json.loads((small_world / "cirr/captions/cap.rc2.val.json").read_text())
    for key in keys:
        pred = out / "predictions" / key
        validate_cirr_submission(json.loads((pred / "cirr_val_recall.json").read_text()),
                                 json.loads((pred / "cirr_val_recall_subset.json").read_text()), queries)


def test_circo_predictions(small_world, tiny_clip_dir, tmp_path):
    out = tmp_path / "out"
    assert main(["--benchmark", "circo", "--root", str(small_world / "circo"), "--out", str(out),
                 *_common(tiny_clip_dir, tmp_path)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["results"]) == ["slerp@0.80"]  # the paper's CIRCO default
    assert "files" in metrics and "plot" not in metrics["files"]
    queries = json.loads((small_world / "circo/annotations/val.json").read_text())
    validate_circo_submission(json.loads((out / "predictions/slerp@0.80/circo_val.json").read_text()), queries)


def _to_test_split(world: Path, tmp_path: Path) -> Path:
    """The world's val files renamed to test (CIRR test1), with ground truth stripped as the real test files are."""
    root = tmp_path / "t"
    shutil.copytree(world, root)
    caps = json.loads((root / "cirr/captions/cap.rc2.val.json").read_text())
    for q in caps:
        q.pop("target_hard"), q.pop("target_soft"), q["img_set"].pop("target_rank")
    (root / "cirr/captions/cap.rc2.test1.json").write_text(json.dumps(caps))
    shutil.copy(root / "cirr/image_splits/split.rc2.val.json", root / "cirr/image_splits/split.rc2.test1.json")
    anns = json.loads((root / "circo/annotations/val.json").read_text())
    test = [{k: a[k] for k in ("id", "reference_img_id", "relative_caption", "shared_concept")} for a in anns]
    (root / "circo/annotations/test.json").write_text(json.dumps(test))
    return root


def test_test_split_writes_server_files(small_world, tiny_clip_dir, tmp_path):
    root = _to_test_split(small_world, tmp_path)
    out = tmp_path / "cirr_test"
    assert main(["--benchmark", "cirr", "--split", "test", "--root", str(root / "cirr"), "--out", str(out),
                 *_common(tiny_clip_dir, tmp_path)]) == 0
    pred = out / "predictions/slerp@0.90"
    assert sorted(p.name for p in pred.iterdir()) == ["cirr_test1_recall.json", "cirr_test1_recall_subset.json"]
    queries = json.loads((root / "cirr/captions/cap.rc2.test1.json").read_text())
    validate_cirr_submission(json.loads((pred / "cirr_test1_recall.json").read_text()),
                             json.loads((pred / "cirr_test1_recall_subset.json").read_text()), queries)
    assert "no ground truth" in (out / "results.md").read_text()
    out = tmp_path / "circo_test"
    assert main(["--benchmark", "circo", "--split", "test", "--root", str(root / "circo"), "--out", str(out),
                 *_common(tiny_clip_dir, tmp_path)]) == 0
    validate_circo_submission(json.loads((out / "predictions/slerp@0.80/circo_test.json").read_text()),
                              json.loads((root / "circo/annotations/test.json").read_text()))


def test_compare(small_world, tiny_clip_dir, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    base = ["--benchmark", "cirr", "--root", str(small_world / "cirr"), *_common(tiny_clip_dir, tmp_path)]
    assert main([*base, "--fusion", "image,text", "--out", str(a), "--label", "baselines"]) == 0
    assert main([*base, "--fusion", "slerp,linear", "--alpha-sweep", "0.5:1:0.25", "--out", str(b)]) == 0
    capsys.readouterr()
    table_file = tmp_path / "cmp.md"
    assert main(["--compare", str(a / "metrics.json"), str(b / "metrics.json"), "--best", "headline",
                 "--metrics", "R@1,R@5,Rs@1", "--groups", "--out", str(table_file),
                 "--plot", str(tmp_path / "sweep.png")]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    out = out.replace(f"wrote {tmp_path / 'sweep.png'}\n", "")
    assert out == table_file.read_text()
    lines = out.strip().splitlines()
    assert lines[0].startswith("| run | fusion | R@1 | R@1 seen | R@1 held-out | R@5")
    assert len(lines) == 2 + 4  # image, text, best linear, best slerp
    assert "| baselines | image-only |" in out and "Slerp a=" in out


def test_parsers():
    assert parse_sweep("0:1:0.25") == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert parse_sweep("0:1:0.1")[-1] == 1.0 and len(parse_sweep("0:1:0.1")) == 11
    assert parse_sweep("0.9:0.9:0.1") == [0.9]
    assert parse_fusions("all") == ["image", "text", "linear", "slerp"]
    for bad in ("0:2:0.1", "1:0:0.1", "0:1:0", "a:b"):
        with pytest.raises(ValueError):
            parse_sweep(bad)
    with pytest.raises(ValueError):
        parse_fusions("slerp,avg")


@pytest.mark.parametrize("extra, message", [
    ([], "--out"),
    (["--alpha-sweep", "0:2:0.1", "--out", "X"], "alpha-sweep"),
    (["--fusion", "avg", "--out", "X"], "fusion"),
    (["--categories", "dress", "--out", "X"], "fashioniq"),
])
def test_bad_input_exits_nonzero_with_message(small_world, tiny_clip_dir, tmp_path, capsys, extra, message):
    extra = [str(tmp_path / "o") if x == "X" else x for x in extra]
    rc = main(["--benchmark", "cirr", "--root", str(small_world / "cirr"), *_common(tiny_clip_dir, tmp_path), *extra])
    assert rc != 0 and message in capsys.readouterr().err


def test_missing_images_named_on_stderr(small_world, tiny_clip_dir, tmp_path, capsys):
    root = tmp_path / "w"
    shutil.copytree(small_world, root)
    victim = sorted((root / "cirr/dev").iterdir())[0]
    victim.unlink()
    args = ["--benchmark", "cirr", "--root", str(root / "cirr"), "--out", str(tmp_path / "o"),
            *_common(tiny_clip_dir, tmp_path)]
    assert main(args) == 2
    assert victim.stem in capsys.readouterr().err
    assert main([*args, "--skip-missing"]) == 0
    assert json.loads((tmp_path / "o/metrics.json").read_text())["counts"]["missing_images"] == 1


def test_help_documents_options(capsys):
    assert main(["--help"]) == 0  # main(argv) -> int, like every CLI
    text = capsys.readouterr().out
    for opt in ("--benchmark", "--root", "--split", "--model", "--adapter", "--fusion", "--alpha", "--alpha-sweep",
                "--categories", "--batch-size", "--device", "--out", "--compare", "--skip-missing", "--cache-dir"):
        assert opt in text


def test_fashioniq_cli_on_excerpt(shared_formats, tiny_clip_dir, tmp_path):
    root = excerpt_with_images(shared_formats, tmp_path, "fashioniq")
    out = tmp_path / "fiq"
    assert main(["--benchmark", "fashioniq", "--root", str(root), "--categories", "dress", "--fusion", "slerp,image",
                 "--out", str(out), *_common(tiny_clip_dir, tmp_path)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["results"]["slerp@0.80"]) == {"dress/R@10", "dress/R@50", "R@10", "R@50"}
    rows = json.loads((out / "predictions/slerp@0.80/fashioniq_dress_val.json").read_text())
    caps = json.loads((root / "captions/cap.dress.val.json").read_text())
    assert [r["candidate"] for r in rows] == [c["candidate"] for c in caps]
    assert all(len(r["ranking"]) == 30 for r in rows)  # the excerpt's gallery has 30 images


def test_compare_rejects_mixed_benchmarks_and_bad_files(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"benchmark": "cirr", "fusions": [], "results": {}}))
    b.write_text(json.dumps({"benchmark": "circo", "fusions": [], "results": {}}))
    assert main(["--compare", str(a), str(b)]) == 2
    assert "different benchmarks" in capsys.readouterr().err
    (tmp_path / "c.json").write_text("{}")
    assert main(["--compare", str(tmp_path / "c.json")]) == 2
    assert "not a cir eval metrics.json" in capsys.readouterr().err


def test_fashioniq_single_index_cli(tiny_clip_dir, tmp_path, capsys):
    root = fashioniq_dataset(tmp_path / "fiq")
    runs = {}
    for name, extra in (("per", []), ("one", ["--single-index"])):
        out = tmp_path / name
        assert main(["--benchmark", "fashioniq", "--root", str(root), "--out", str(out), "--batch-size", "1",
                     *extra, *_common(tiny_clip_dir, tmp_path)]) == 0
        runs[name] = json.loads((out / "metrics.json").read_text())
    assert runs["one"]["results"] == runs["per"]["results"]
    assert runs["one"]["settings"]["single_index"] is True and runs["per"]["settings"]["single_index"] is False
    assert sorted(p.name for p in (tmp_path / "one/predictions/slerp@0.80").iterdir()) == [
        f"fashioniq_{c}_val.json" for c in ("dress", "shirt", "toptee")]
    capsys.readouterr()
    assert main(["--benchmark", "cirr", "--root", str(root), "--out", str(tmp_path / "x"), "--single-index",
                 *_common(tiny_clip_dir, tmp_path)]) == 2
    assert "fashioniq only" in capsys.readouterr().err
