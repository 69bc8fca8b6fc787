"""perf/peers.py prints no ratio when the two sides ran at loads more than 1 apart."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "perf"))

import peers  # noqa: E402 - perf/ is a folder of scripts


def _row(images_per_s: float, wall_s: float, mean: float) -> dict:
    return {"side": "x", "images": 10, "images_per_s": images_per_s, "wall_s": wall_s, "min_cosine_to_peer": 1.0,
            "load": {"start": [mean] * 3, "end": [mean] * 3, "1min_range": [mean, mean], "1min_mean": mean}}


def test_ratios_need_comparable_loads(capsys):
    peer = _row(13.16, 75.7, 1.2)
    close = peers.ratios(_row(14.59, 41.0, 1.9), peer)
    assert close == {"ratio_to_peer": 1.109, "wall_ratio_to_peer": 1.846, "load_gap": 0.7}
    far = peers.ratios(_row(6.83, 306.0, 4.0), _row(1.81, 1288.0, 11.0))
    assert far["ratio_to_peer"] is None and far["wall_ratio_to_peer"] is None and far["load_gap"] == 7.0
    no_load = peers.ratios({**_row(1, 1, 1), "load": None}, peer)
    assert no_load["ratio_to_peer"] is None
    rows = [{**_row(6.83, 306.0, 4.0), **far}, {**_row(1.81, 1288.0, 11.0), **far}]

    class Args:
        images, batch_size, workers, threads = 10, 64, 1, 2

    peers.print_table("indexer", rows, Args)
    out = capsys.readouterr().out
    assert "n/a" in out and "no ratio where the two sides' mean loads differ by more than 1" in out
