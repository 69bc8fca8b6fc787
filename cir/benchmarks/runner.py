"""`evaluate(...)`: embed a benchmark's gallery once, compose every requested fusion, rank, score.

One pass per benchmark part (a FashionIQ category is a part): gallery embeddings come from
the on-disk cache when possible; reference embeddings are the gallery's own rows (every
benchmark's references are gallery images), so no image is encoded twice; each fusion and
alpha is then only a fuse + matmul + top-k. With `single_index` FashionIQ's categories are one
gallery and every query is restricted to its category by a filter (cir.filters), as a shop
with one index would search; the rankings are then scored per category as usual.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from tqdm import tqdm

from cir.benchmarks.config import EvalConfig, EvalRun, PartRun, fusion_key, normalize_fusions
from cir.benchmarks.data import BenchmarkData, MissingImagesError
from cir.benchmarks.fashioniq import single_index
from cir.benchmarks.gallery_cache import GalleryCache
from cir.benchmarks.loaders import load_benchmark
from cir.benchmarks.ranking import rank_gallery
from cir.benchmarks.scoring import group_report, score_parts
from cir.columns import build_columns, describe
from cir.filters import parse_filter
from cir.fusion import DEFAULT_ALPHA, fuse, l2_normalize
from cir.metadata import infer_types

log = logging.getLogger(__name__)
def _find_missing(data: BenchmarkData, ids: Sequence[str]) -> list[tuple[str, str]]:
    return [(i, str(data.image_path(i))) for i in ids if not data.image_path(i).is_file()]


def _embed(cache: GalleryCache, encoder, data: BenchmarkData, ids: list[str], cfg: EvalConfig, desc: str):
    res = cache.embed(encoder, [data.image_path(i) for i in ids], batch_size=cfg.batch_size,
                      workers=cfg.workers, progress=cfg.progress, desc=desc)
    by_path = {str(data.image_path(i)): i for i in ids}
    failed = [(by_path.get(p, p), f"unreadable ({reason})") for p, reason in res.failed]
    return [ids[k] for k in res.ok], res.embeddings, failed


def _images(cache: GalleryCache, encoder, data: BenchmarkData, cfg: EvalConfig):
    """Gallery ids + embeddings, reference embeddings by id, and the missing/unreadable images."""
    gallery = data.require_gallery()
    refs = sorted({q.reference for q in data.queries} - set(gallery))
    missing = _find_missing(data, list(dict.fromkeys([*gallery, *refs])))
    bad = {i for i, _ in missing}
    if missing and not cfg.skip_missing:
        raise MissingImagesError(f"{data.benchmark}/{data.part} {data.split}", missing, data.missing_hint)
    g_ids, g_emb, failed = _embed(cache, encoder, data, [g for g in gallery if g not in bad],
                                  cfg, f"embed {data.part} gallery")
    ref_rows = {g: g_emb[k] for k, g in enumerate(g_ids)}
    extra = [r for r in refs if r not in bad]
    if extra:
        r_ids, r_emb, r_failed = _embed(cache, encoder, data, extra, cfg, f"embed {data.part} references")
        ref_rows.update({r: r_emb[k] for k, r in enumerate(r_ids)})
        failed += r_failed
    if failed and not cfg.skip_missing:
        raise MissingImagesError(f"{data.benchmark}/{data.part} {data.split}", failed, data.missing_hint)
    return g_ids, g_emb, ref_rows, missing + failed


def _text_embeddings(encoder, queries, caption_order: str) -> np.ndarray:
    texts = list(dict.fromkeys([q.text for q in queries] + [q.alt_text for q in queries if q.alt_text]))
    rows = dict(zip(texts, encoder.encode_texts(texts))) if texts else {}
    w = np.stack([rows[q.text] for q in queries]) if queries else np.zeros((0, encoder.dim), np.float32)
    if caption_order == "both":
        alt = np.stack([rows[q.alt_text or q.text] for q in queries]) if queries else w
        w = l2_normalize((w + alt).astype(np.float32))
    return w.astype(np.float32)


def _filter_masks(data: BenchmarkData, queries: list, g_ids: list[str]) -> list[np.ndarray] | None:
    """Per query, the gallery rows its filter admits (cir.filters on the gallery metadata's columns)."""
    if not any(q.filter for q in queries):
        return None
    metadatas = [data.metadata.get(g, {}) for g in g_ids]
    columns = build_columns(infer_types(enumerate(metadatas)), metadatas)
    fields = describe(columns)
    masks: dict[str, np.ndarray] = {}
    for q in queries:
        key = json.dumps(q.filter, sort_keys=True)
        if key not in masks:
            flt = parse_filter(q.filter)
            masks[key] = flt.bind(fields).mask(columns) if flt else np.ones(len(g_ids), dtype=bool)
    return [masks[json.dumps(q.filter, sort_keys=True)] for q in queries]


def run_part(encoder, data: BenchmarkData, cfg: EvalConfig, cache: GalleryCache) -> PartRun:
    """Embed, then compose, rank and collect every fusion's rankings for one part."""
    g_ids, g_emb, ref_rows, missing = _images(cache, encoder, data, cfg)
    bad = {i for i, _ in missing}
    queries = [q for q in data.queries if q.reference in ref_rows and not bad.intersection(q.image_ids())]
    kept = {q.qid for q in queries}
    skipped = [q.qid for q in data.queries if q.qid not in kept]
    if skipped:
        log.warning("%s/%s: skipped %d of %d queries whose images are missing", data.benchmark, data.part,
                    len(skipped), len(data.queries))
    run = PartRun(replace(data, queries=queries), len(g_ids), skipped=skipped, missing=missing)
    if not queries:
        return run
    run.truncated_texts = sum(encoder.truncated([q.text for q in queries]))
    pos = {g: k for k, g in enumerate(g_ids)}
    v = np.stack([ref_rows[q.reference] for q in queries]).astype(np.float32)
    w = _text_embeddings(encoder, queries, cfg.caption_order)
    exclude = [pos.get(q.reference) for q in queries] if data.remove_reference else None
    subsets = ([[pos[m] for m in q.members if m in pos and m != q.reference] for q in queries]
               if data.benchmark == "cirr" else None)
    masks = _filter_masks(data, queries, g_ids)
    for name, alpha in tqdm(cfg.fusions, desc=f"rank {data.part}", disable=not cfg.progress or len(cfg.fusions) < 2):
        key = fusion_key(name, alpha)
        tops, ordered = rank_gallery(fuse(name, v, w, alpha), g_emb, cfg.top_k, exclude, subsets, masks)
        run.rankings[key] = {q.qid: [g_ids[i] for i in t] for q, t in zip(queries, tops)}
        if subsets is not None:
            run.subsets[key] = {q.qid: [g_ids[i] for i in o] for q, o in zip(queries, ordered)}
    return run


def _strip(prefix: str, by_qid: dict) -> dict:
    return {qid[len(prefix):]: v for qid, v in by_qid.items() if qid.startswith(prefix)}


def split_single_index(run: PartRun, parts: list[BenchmarkData]) -> list[PartRun]:
    """A single-index run's queries and rankings back under their categories (its qids are "<part>/<qid>").

    The shared gallery's missing images and truncated texts are counted once, on the first part.
    """
    out = []
    for n, data in enumerate(parts):
        prefix = f"{data.part}/"
        kept = _strip(prefix, {q.qid: q for q in run.data.queries})
        part = PartRun(replace(data, queries=[q for q in data.queries if q.qid in kept]), run.gallery_size,
                       skipped=list(_strip(prefix, dict.fromkeys(run.skipped))),
                       missing=run.missing if n == 0 else [], truncated_texts=run.truncated_texts if n == 0 else 0)
        part.rankings = {key: _strip(prefix, ranks) for key, ranks in run.rankings.items()}
        out.append(part)
    return out


def _counts(parts: list[PartRun], shared_gallery: bool = False) -> dict:
    counts = {"queries": sum(len(p.data.queries) for p in parts),
              "skipped_queries": sum(len(p.skipped) for p in parts),
              "missing_images": sum(len(p.missing) for p in parts),
              "gallery": parts[0].gallery_size if shared_gallery else sum(p.gallery_size for p in parts),
              "truncated_texts": sum(p.truncated_texts for p in parts)}
    if len(parts) > 1:
        counts["parts"] = {p.data.part: {"queries": len(p.data.queries), "skipped_queries": len(p.skipped),
                                         "gallery": p.gallery_size} for p in parts}
    missing = [f"{i}: {where}" for p in parts for i, where in p.missing]
    if missing:
        counts["missing_examples"] = missing[:20]
    return counts


def run_evaluation(encoder, cfg: EvalConfig) -> EvalRun:
    """Evaluate `encoder` as `cfg` says; returns the report and every ranking (for submission files)."""
    t0 = time.perf_counter()
    datas = load_benchmark(cfg.benchmark, cfg.root, cfg.split, cfg.categories)
    cache = GalleryCache(cfg.cache_dir)
    if cfg.single_index:
        parts = split_single_index(run_part(encoder, single_index(datas), cfg, cache), datas)
    else:
        parts = [run_part(encoder, d, cfg, cache) for d in datas]
    report = {
        "benchmark": cfg.benchmark, "split": cfg.split, "root": str(datas[0].root),
        "encoder": encoder.info(),
        "fusions": [{"key": fusion_key(n, a), "fusion": n, "alpha": a} for n, a in cfg.fusions],
        "settings": {"top_k": cfg.top_k, "caption_order": cfg.caption_order,
                     "categories": [d.part for d in datas] if cfg.benchmark == "fashioniq" else None,
                     "reference_removed": datas[0].remove_reference, "skip_missing": cfg.skip_missing,
                     "single_index": cfg.single_index},
        "counts": _counts(parts, cfg.single_index),
        "results": score_parts(cfg.benchmark, parts, cfg.keys),
    }
    groups = group_report(cfg.benchmark, parts, cfg.keys)
    if groups:
        report["groups"], report["group_counts"] = groups
    report["seconds"] = round(time.perf_counter() - t0, 3)
    return EvalRun(cfg, report, parts)


def evaluate(encoder, benchmark: str, root: str | Path, split: str = "val",
             fusions: Iterable[tuple[str, float]] = (("slerp", DEFAULT_ALPHA),), batch_size: int = 64,
             cache_dir: str | Path | None = None, skip_missing: bool = False,
             categories: Iterable[str] | None = None, **options) -> dict:
    """Score `encoder` on a benchmark for each (fusion, alpha); metrics x100 under results['<fusion>@<alpha>'].

    Extra keyword options: workers, caption_order ('forward' | 'both'), top_k, progress.
    """
    cfg = EvalConfig(benchmark=benchmark, root=Path(root), split=split, fusions=tuple(fusions),
                     batch_size=batch_size, cache_dir=Path(cache_dir) if cache_dir else None,
                     skip_missing=skip_missing, categories=tuple(categories) if categories else None, **options)
    return run_evaluation(encoder, cfg).report


__all__ = ["EvalConfig", "EvalRun", "PartRun", "evaluate", "fusion_key", "normalize_fusions",
           "run_evaluation", "run_part"]
