"""Render styles: plain is the original world bit for bit; textured changes the background only."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from cir.toyworld import Attrs, generate_world, holds_world, render
from cir.toyworld.cli import main
from cir.toyworld.render import SUPERSAMPLE, _mask
from cir.toyworld.spec import BACKGROUND, COLOURS, RGB, SHAPES
from cir.toyworld.styles import TEXTURED

TINY = dict(seed=5, gallery_size=40, n_queries=12, n_captions=24)
# sha256 over (relative path, bytes) of every PNG, captions.jsonl and queries.jsonl of
# generate_world(seed=5, gallery_size=40, n_queries=12, n_captions=24), computed with the code
# before render styles existed (commit c151b27).
PLAIN_DIGEST = "cbfee217b3fdd132745de8d6443b1004ef623ce2dbfbeeb6e14c827b910570dc"


def _content_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and (p.suffix == ".png" or p.name in ("captions.jsonl", "queries.jsonl")):
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def _files(root: Path, suffix: str) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob(f"*{suffix}")) if p.is_file()}


@pytest.fixture(scope="module")
def worlds(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("styles")
    out = {"default": base / "default", "plain": base / "plain", "textured": base / "textured"}
    generate_world(out["default"], **TINY)
    generate_world(out["plain"], style="plain", **TINY)
    generate_world(out["textured"], style="textured", **TINY)
    return out


def test_plain_is_the_original_world_bit_for_bit(worlds):
    assert _content_digest(worlds["default"]) == PLAIN_DIGEST
    assert _content_digest(worlds["plain"]) == PLAIN_DIGEST
    assert "style" not in json.loads((worlds["plain"] / "world.json").read_text())


def test_textured_keeps_everything_but_the_pixels(worlds, tmp_path):
    plain, textured = worlds["plain"], worlds["textured"]
    for suffix in (".json", ".jsonl"):  # captions, queries, CIRR/CIRCO annotations, gallery list
        a, b = _files(plain, suffix), _files(textured, suffix)
        a.pop("world.json", None), b.pop("world.json", None)
        assert a == b
    assert json.loads((textured / "world.json").read_text())["style"] == "textured"
    pa, pb = _files(plain, ".png"), _files(textured, ".png")
    assert pa.keys() == pb.keys() and all(pa[k] != pb[k] for k in pa)
    again = tmp_path / "again"
    generate_world(again, style="textured", **TINY)
    assert _files(again, ".png") == pb
    other = tmp_path / "other"
    generate_world(other, style="textured", **{**TINY, "seed": 6})
    assert _files(other, ".png") != pb


def _full_coverage(attrs: Attrs, seed: int, size: int = 32) -> np.ndarray:
    """Pixels that the object covers completely (the renderer's own mask, box-filtered)."""
    mask = _mask(attrs, size, np.random.default_rng(seed))
    return mask.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(1, 3)) >= 1.0


def _nearest_colour(pixels: np.ndarray) -> str:
    """The palette colour closest in chromaticity (brightness divided out) to the mean pixel."""
    mean = pixels.reshape(-1, 3).mean(axis=0)
    chroma = lambda rgb: np.asarray(rgb, float) / max(sum(rgb), 1e-9)  # noqa: E731
    return min(COLOURS, key=lambda c: np.abs(chroma(RGB[c]) - chroma(mean)).sum())


@pytest.mark.parametrize("shape", SHAPES)
def test_textured_keeps_the_object_and_changes_the_background(shape):
    for k, colour in enumerate(COLOURS):
        attrs = Attrs(shape, colour, "large", ["top left", "bottom right"][k % 2], "solid")
        seed = 100 + k
        plain = np.asarray(render(attrs, np.random.default_rng(seed)), np.float64)
        tex = np.asarray(render(attrs, np.random.default_rng(seed), style="textured"), np.float64)
        inside = _full_coverage(attrs, seed)
        assert inside.sum() > 20
        assert _nearest_colour(tex[inside]) == colour
        # inside the object only the lighting gain (and the same pixel noise) differs from plain
        ratio = (tex[inside] + 1) / (plain[inside] + 1)
        assert np.all(np.abs(ratio - 1) < TEXTURED.light + 0.1)
        outside = ~_full_coverage(attrs, seed) & (np.abs(plain - BACKGROUND).max(axis=2) < 12)
        # both renders drew the same pixel noise: what differs outside the object is the background
        assert np.abs(tex[outside] - plain[outside]).mean() > 2
        assert tex[outside].std(axis=0).mean() > plain[outside].std(axis=0).mean()  # and not flat


def test_render_refuses_an_unknown_style():
    with pytest.raises(ValueError, match="unknown style"):
        render(Attrs("star", "blue", "small", "top left", "solid"), np.random.default_rng(0), style="neon")


def test_cli_style_option(tmp_path, capsys):
    out = tmp_path / "w"
    args = ["--out", str(out), "--gallery-size", "20", "--queries", "3", "--captions", "4", "--quiet"]
    assert main([*args, "--style", "textured"]) == 0
    assert json.loads((out / "world.json").read_text())["style"] == "textured"
    assert "(textured)" in capsys.readouterr().out
    assert main([*args, "--style", "neon"]) == 2
    assert "invalid choice: 'neon'" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert "--style" in capsys.readouterr().out


def test_holds_world_knows_its_arguments(worlds):
    assert holds_world(worlds["textured"], style="textured", **TINY)
    assert holds_world(worlds["plain"], **TINY) and holds_world(worlds["default"], style="plain", **TINY)
    assert not holds_world(worlds["plain"], style="textured", **TINY)
    assert not holds_world(worlds["textured"], **TINY)
    assert not holds_world(worlds["textured"], style="textured", **{**TINY, "seed": 6})
    assert not holds_world(worlds["textured"].parent / "missing", style="textured", **TINY)
