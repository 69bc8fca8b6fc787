"""Supervised CIR on triplets: the composed Slerp query contrasted with target images.

Each triplet's query is `compose("slerp", references, text, alpha)` (several references merged
by their spherical mean), built from the image tower being tuned and the text tower (frozen
unless --text-lora). Its positives are the batch's candidates showing its target image; every
other target in the (global) batch is a negative, and so are the hard negatives mined once, at
the start, from a gallery index: the top-ranked items of the query that are neither the target
nor a reference. The loss is cross-entropy from queries to candidates (CLIP4Cir's direction).
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset

from cir.defaults import DEFAULT_ALPHA
from cir.errors import StoreError
from cir.fusion import compose, l2_normalize
from cir.io import atomic_write_json
from cir.stores import open_store
from training import distributed as D
from training.data import BadImage, DataFormatError
from training.loss import _soft_cross_entropy
from training.triplets import TripletSource, load_image

log = logging.getLogger(__name__)

NEGATIVES_FILE = "hard_negatives.json"
MINE_DEPTH = 20  # results searched per query when mining, before the target and references are dropped


@contextlib.contextmanager
def gallery_view(index_root: str, option: str) -> Iterator[object]:
    """The current version of an index, closed after use; a bad root is a DataFormatError naming `option`."""
    try:
        store = open_store(index_root)
        view = store.open()
    except StoreError as exc:
        raise DataFormatError(f"{option} {index_root}: {exc}") from exc
    try:
        yield view
    finally:
        view.close()
        store.close()


def _autocast(encoder):
    if encoder.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=encoder.device.type, dtype=encoder.autocast_dtype)


class TripletBatches(Dataset):
    """Item k: the decoded references, targets and hard negatives of batch_indices(k), as one pixel batch."""

    def __init__(self, source: TripletSource, preprocess, batch_indices, negatives: dict | None = None):
        self.source, self.preprocess, self.batch_indices = source, preprocess, batch_indices
        self.negatives = negatives or {}

    def _negatives(self, i: int) -> tuple[list, list[str]]:
        images, keys = [], []
        for path in self.negatives.get(str(i), ()):
            try:
                images.append(load_image(path))
                keys.append(path)
            except BadImage as exc:  # a lost negative costs a negative, not the triplet
                log.debug("hard negative skipped: %s", exc)
        return images, keys

    def __getitem__(self, k: int) -> dict:
        refs, counts, targets, texts, target_keys, negs, neg_keys, failed = [], [], [], [], [], [], [], []
        indices = self.batch_indices(k)
        for i in map(int, indices):
            t = self.source.triplet(i)
            try:
                loaded = [load_image(p) for p in t.references]
                target = load_image(t.target)
            except BadImage as exc:
                failed.append(str(exc))
                continue
            refs += loaded
            counts.append(len(loaded))
            targets.append(target)
            texts.append(t.text)
            target_keys.append(t.target)
            images, keys = self._negatives(i)
            negs += images
            neg_keys += keys
        images = refs + targets + negs
        pixels = self.preprocess.batch(images) if images else torch.zeros(0)
        return {"index": k, "pixels": pixels, "counts": counts, "captions": texts, "targets": target_keys,
                "negatives": neg_keys, "meta": [], "failed": failed, "slots": len(indices)}


def reference_sets(refs: torch.Tensor, counts: list[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, N, D) reference sets padded with each set's first row at weight 0, and the (B, N) weights."""
    n = max(counts)
    rows = torch.split(refs, counts)
    if n == 1:
        return refs.unsqueeze(1), None
    sets = torch.stack([torch.cat([r, r[:1].expand(n - len(r), -1)]) for r in rows])
    weights = torch.tensor([[1.0] * c + [0.0] * (n - c) for c in counts], device=refs.device)
    return sets, weights


def composed_queries(encoder, refs: torch.Tensor, counts: list[int], texts: list[str], alpha: float,
                     text_grad: bool) -> torch.Tensor:
    """Unit Slerp queries of B triplets from unit reference rows (several per triplet merged by the spherical mean)."""
    if text_grad:
        with _autocast(encoder):
            text = l2_normalize(encoder.text_features(encoder.tokenize(texts)).float())
    else:
        text = torch.from_numpy(encoder.encode_texts(texts)).to(refs.device)  # frozen: no graph
    sets, weights = reference_sets(refs, counts)
    return l2_normalize(compose("slerp", sets, text, alpha, image_weights=weights))


def triplet_loss(encoder, batch: dict, alpha: float, scale: float, info: D.DistInfo, local_size: int,
                 text_grad: bool):
    """Global-batch query-to-candidate loss of one micro-batch (None without a negative); grad: this rank's rows."""
    texts, counts = batch["captions"], batch["counts"]
    dim = encoder.dim
    if texts:
        with _autocast(encoder):
            feats = encoder.image_features(batch["pixels"])
        feats = l2_normalize(feats.float())
        query = composed_queries(encoder, feats[:sum(counts)], counts, texts, alpha, text_grad)
        cands = feats[sum(counts):]
    else:
        query = cands = torch.zeros((0, dim), device=encoder.device)
    query, _ = D.gather_padded(query, local_size, info)
    rows = max(D.gather_objects(cands.shape[0], info))
    cands, _ = D.gather_padded(cands, rows, info)
    parts = D.gather_objects((batch["targets"], batch["negatives"]), info)
    targets = [t for part in parts for t in part[0]]
    keys = [k for part in parts for k in part[0] + part[1]]
    if not targets or len(keys) < 2:
        return None
    positives = torch.tensor([[t == c for c in keys] for t in targets], dtype=torch.bool)
    logits = scale * query @ cands.T
    return _soft_cross_entropy(logits, positives.to(logits.device))


def _embed_triplets(encoder, source: TripletSource, indices, alpha: float, batch_size: int):
    """Unit queries and target embeddings of the given triplets (unreadable ones dropped), and their indices."""
    queries, targets, kept = [], [], []
    for start in range(0, len(indices), batch_size):
        refs, counts, tgts, texts = [], [], [], []
        for i in map(int, indices[start:start + batch_size]):
            t = source.triplet(i)
            try:
                loaded, target = [load_image(p) for p in t.references], load_image(t.target)
            except BadImage:
                continue
            refs += loaded
            counts.append(len(loaded))
            tgts.append(target)
            texts.append(t.text)
            kept.append(i)
        if not texts:
            continue
        emb = torch.from_numpy(encoder.encode_images(refs + tgts))
        with torch.no_grad():
            q = composed_queries(encoder, emb[:len(refs)].to(encoder.device), counts, texts, alpha, False)
        queries.append(q.float().cpu().numpy())
        targets.append(emb[len(refs):].numpy())
    if not kept:
        empty = np.zeros((0, encoder.dim), np.float32)
        return empty, empty, []
    return np.concatenate(queries), np.concatenate(targets), kept


def triplet_recall(encoder, source: TripletSource, indices, alpha: float, batch_size: int) -> dict:
    """Recall@1/@10 of held-out triplets' Slerp queries among the distinct held-out targets."""
    queries, targets, kept = _embed_triplets(encoder, source, np.asarray(indices), alpha, batch_size)
    if not kept:
        return {"triplets": 0}
    names = [source.triplet(i).target for i in kept]
    unique = {n: j for j, n in enumerate(dict.fromkeys(names))}
    pool = np.stack([targets[names.index(n)] for n in unique])
    ranks = np.argsort(-(queries @ pool.T), axis=1)
    hit = ranks == np.array([unique[n] for n in names])[:, None]
    first = hit.argmax(axis=1)
    return {"triplets": len(kept), "candidates": len(unique), "alpha": alpha,
            "R@1": round(100.0 * float(np.mean(first < 1)), 3), "R@10": round(100.0 * float(np.mean(first < 10)), 3)}


def mine_negatives(encoder, source: TripletSource, indices, view, per_query: int, alpha: float,
                   batch_size: int) -> dict[str, list[str]]:
    """Per training triplet, the files of the gallery's top-ranked items that are neither its target nor a reference."""
    queries, _, kept = _embed_triplets(encoder, source, np.asarray(indices), alpha, batch_size)
    out: dict[str, list[str]] = {}
    if not kept:
        return out
    _, ids = view.search(queries, per_query + MINE_DEPTH)
    paths: dict[str, str | None] = {}
    for i, row in zip(kept, ids):
        t = source.triplet(i)
        exclude = {str(Path(p).resolve()) for p in (*t.references, t.target)}
        chosen = []
        for item_id in row:
            if item_id not in paths:
                item = view.item(item_id)
                paths[item_id] = str(item["path"]) if item else None
            path = paths[item_id]
            if path and str(Path(path).resolve()) not in exclude:
                chosen.append(path)
            if len(chosen) == per_query:
                break
        out[str(i)] = chosen
    return out


def hard_negatives(job, index_root: str, per_query: int) -> dict[str, list[str]]:
    """Mine (first run) or re-read (resume) the hard negatives of every training triplet, in OUT/hard_negatives.json."""
    path = job.out / NEGATIVES_FILE
    if job.info.main and not path.is_file():
        with gallery_view(index_root, "--hard-negatives") as view:
            job.model.eval()
            negatives = mine_negatives(job.encoder, job.source, job.plan.train, view, per_query, job.alpha,
                                       job.cfg.eval_batch_size)
            version = view.version
        atomic_write_json(path, {"index": str(index_root), "version": version, "per_query": per_query,
                                 "negatives": negatives})
        log.info("mined %d hard negatives for %d triplets from %s", sum(map(len, negatives.values())),
                 len(negatives), index_root)
    D.barrier(job.info)
    return json.loads(path.read_text())["negatives"]


def index_alpha(index_root: str | None, option: str = "--gallery") -> float:
    """The default alpha of an index's current version (what its searches use), else DEFAULT_ALPHA."""
    if not index_root:
        return DEFAULT_ALPHA
    with gallery_view(index_root, option) as view:
        alpha = view.manifest.get("default_alpha")
    return DEFAULT_ALPHA if alpha is None else float(alpha)
