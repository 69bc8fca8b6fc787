"""`cir index build`: plan (reuse vs embed), embed in shards, assemble, build, verify, publish."""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import faiss
import numpy as np
from tqdm import tqdm

from cir import index_store as store
from cir.columns import build_columns, describe
from cir.images import file_sha256
from cir.models import ModelLoadError
from cir.pipeline import iter_embedded_batches
from cir.runtimes import load_runtime_encoder
from indexer.config import BuildConfig
from indexer.factory import build_index, choose_factory
from indexer.gallery import GalleryEntry, GalleryError, field_types, read_gallery, stat_file
from indexer.items import compose_items
from indexer.shards import STAGING, ShardStore, ShardWriter, shard_ranges, staging_key
from indexer.versions import (OutputError, check_writable, new_version_name, prune, remove_stale_tmp,
                              root_lock, write_version)

log = logging.getLogger(__name__)


class BuildError(RuntimeError):
    """A build cannot proceed; the message says why and what to do. Nothing was published."""


@dataclass
class BuildResult:
    """What a finished build did (the `--json` line)."""

    version: str
    count: int
    embedded: int
    reused: int
    skipped: int
    seconds: float
    images_per_s: float
    factory: str = ""
    recall_at_10: float = 1.0


@dataclass
class Base:
    """The published version a build starts from: its items by path and its embeddings."""

    version: str
    by_path: dict
    embeddings: np.ndarray


@dataclass
class Plan:
    """Per gallery entry: reuse a stored row, embed it (a work position) or skip it (reason)."""

    entries: list[GalleryEntry]
    stats: list
    reuse: dict = field(default_factory=dict)
    work: list = field(default_factory=list)
    skipped: dict = field(default_factory=dict)


def load_base(root: Path, fingerprint: str, force_new: bool) -> Base | None:
    """The published version to reuse embeddings from; refuses another encoder's root."""
    idx = store.IndexRoot(root)
    version = idx.current_version()
    if version is None:
        return None
    manifest = idx.manifest(version)
    if manifest.get("fingerprint") != fingerprint:
        if not force_new:
            raise BuildError(
                f"{root} holds version {version} built with another encoder (fingerprint "
                f"{str(manifest.get('fingerprint'))[:12]}, model {manifest.get('model')}); this encoder is "
                f"{fingerprint[:12]}. Use another --out, or --force-new to re-embed everything into this root")
        return None
    vdir = idx.version_dir(version)
    by_path = {it["path"]: it for it in store.iter_items(vdir / store.ITEMS_FILE)}
    return Base(version, by_path, np.load(vdir / store.EMBEDDINGS_FILE, mmap_mode="r"))


def make_plan(entries: list[GalleryEntry], base: Base | None) -> Plan:
    """Reuse unchanged files (same stat, or same content hash); embed new and changed ones."""
    plan = Plan(entries, [stat_file(e.path) for e in entries])
    for i, (entry, st) in enumerate(zip(entries, plan.stats)):
        old = base.by_path.get(entry.path) if base else None
        if st is None:
            plan.skipped[i] = "missing: file not found or not readable"
        elif old is not None and (old["size"], old["mtime_ns"]) == st:
            plan.reuse[i] = old
        elif old is not None and _sha_or_none(entry.path) == old["sha256"]:
            plan.reuse[i] = old  # touched but unchanged content
        else:
            plan.work.append(i)
    return plan


def _sha_or_none(path: str) -> str | None:
    try:
        return file_sha256(path)
    except OSError:
        return None


def embed_local(cfg: BuildConfig, encoder, paths: list[str], ranges, todo: list[int], writer: ShardWriter, bar) -> None:
    """The local executor: DataLoader workers decode, this process encodes; shards as they finish."""
    batches = []
    for k in todo:
        start, stop = ranges[k]
        batches += [list(range(i, min(i + cfg.batch_size, stop))) for i in range(start, stop, cfg.batch_size)]
    for b in iter_embedded_batches(encoder, paths, batches, workers=cfg.workers, hash_files=True,
                                   max_pixels=cfg.max_pixels):
        writer.add(b.indices, b.embeddings, b.sizes, b.hashes, b.failed)
        bar.update(len(b.indices) + len(b.failed))


def run_embedding(cfg: BuildConfig, encoder, plan: Plan, executor=embed_local) -> tuple[ShardStore, list, float]:
    """Embed the plan's work list into shards, skipping finished ones; returns (store, ranges, images/s)."""
    paths = [plan.entries[i].path for i in plan.work]
    work_rows = [(p, *plan.stats[i]) for p, i in zip(paths, plan.work)]
    shards = ShardStore(cfg.out, staging_key(encoder.fingerprint, work_rows, cfg.batch_size,
                                             cfg.shard_size, cfg.max_pixels))
    shards.open({"fingerprint": encoder.fingerprint, "gallery": str(cfg.gallery), "work": len(paths)})
    ranges = shard_ranges(len(paths), cfg.shard_size)
    done = shards.done()
    todo = [k for k in range(len(ranges)) if k not in done]
    total = sum(ranges[k][1] - ranges[k][0] for k in todo)
    if done:
        log.info("resuming: %d of %d shards already embedded", len(done), len(ranges))
    start = time.perf_counter()
    writer = ShardWriter(shards, ranges, encoder.dim)
    with tqdm(total=total, desc="embed", unit="img", disable=not cfg.progress, smoothing=0.05) as bar:
        if todo:
            executor(cfg, encoder, paths, ranges, todo, writer, bar)
    if writer.pending():
        raise BuildError(f"embedding stopped early: shards {writer.pending()} are incomplete")
    seconds = time.perf_counter() - start
    return shards, ranges, round(total / seconds, 2) if total else 0.0


def assemble(plan: Plan, base: Base | None, shards: ShardStore, ranges, dim: int):
    """Items and vectors in gallery order (skipped entries left out), plus the skip list."""
    fresh: dict[int, tuple] = {}
    skipped = dict(plan.skipped)
    for k in range(len(ranges)):
        shard = shards.read(k)
        for j, pos in enumerate(shard.positions):
            fresh[plan.work[pos]] = (shard.embeddings[j], int(shard.widths[j]), int(shard.heights[j]), shard.hashes[j])
        for pos, reason in zip(shard.failed_positions, shard.failed_reasons):
            skipped[plan.work[pos]] = reason
    keep = [i for i in range(len(plan.entries)) if i not in skipped]
    vectors = np.empty((len(keep), dim), np.float32)
    items, reuse_dest, reuse_src = [], [], []
    for row, i in enumerate(keep):
        entry, (size, mtime) = plan.entries[i], plan.stats[i]
        if i in plan.reuse:
            old = plan.reuse[i]
            reuse_dest.append(row), reuse_src.append(old["row"])
            width, height, sha = old["width"], old["height"], old["sha256"]
        else:
            vectors[row], width, height, sha = fresh[i]
        items.append({"id": entry.id, "path": entry.path, "width": width, "height": height, "sha256": sha,
                      "size": size, "mtime_ns": mtime, "metadata": entry.metadata})
    if reuse_dest:
        order = np.argsort(reuse_src)  # read the memory-mapped base in file order
        vectors[np.asarray(reuse_dest)[order]] = base.embeddings[np.asarray(reuse_src)[order]]
    skip_list = [{"id": plan.entries[i].id, "path": plan.entries[i].path, "reason": r} for i, r in sorted(skipped.items())]
    return items, vectors, skip_list


def _prepare(cfg: BuildConfig) -> tuple[list[GalleryEntry], dict[str, str]]:
    try:
        entries = read_gallery(cfg.gallery)
        types = field_types(cfg.gallery, entries)  # before any embedding: a bad manifest fails fast
    except GalleryError as exc:
        raise BuildError(str(exc)) from exc
    if not entries:
        raise BuildError(f"gallery {cfg.gallery} contains no images ({', '.join(('jpg', 'jpeg', 'png', 'webp', 'bmp'))})")
    try:
        check_writable(cfg.out)
    except OutputError as exc:
        raise BuildError(str(exc)) from exc
    return entries, types


def _load(cfg: BuildConfig):
    try:
        # With Ray the actors embed; the driver only needs the encoder's identity and dim.
        device = "cpu" if cfg.executor == "ray" else cfg.device
        return load_runtime_encoder(cfg.model, cfg.adapter, device=device, dtype=cfg.dtype, runtime=cfg.runtime,
                                    onnx_cache=cfg.onnx_cache)
    except (ModelLoadError, ValueError, OSError) as exc:
        raise BuildError(f"cannot load the encoder: {exc}") from exc


def build(cfg: BuildConfig, encoder=None, executor=embed_local) -> BuildResult:
    """Run a full (or incremental, or resumed) build and publish the new version.

    `executor(cfg, encoder, paths, ranges, todo, writer, bar)` embeds the unfinished shards:
    `embed_local` here, or `indexer.ray_executor.embed_ray`.
    """
    t0 = time.perf_counter()
    entries, types = _prepare(cfg)
    try:
        with root_lock(cfg.out):
            return _build_locked(cfg, entries, types, encoder or _load(cfg), t0, executor)
    except OutputError as exc:
        raise BuildError(str(exc)) from exc


def _build_locked(cfg: BuildConfig, entries, types: dict[str, str], encoder, t0: float, executor) -> BuildResult:
    remove_stale_tmp(cfg.out)
    base = load_base(cfg.out, encoder.fingerprint, cfg.force_new)
    plan = make_plan(entries, base)
    shards, ranges, rate = run_embedding(cfg, encoder, plan, executor)
    items, vectors, skipped = assemble(plan, base, shards, ranges, encoder.dim)
    if not items:
        reasons = "; ".join(f"{s['id']}: {s['reason']}" for s in skipped[:3])
        raise BuildError(f"none of the {len(entries)} gallery files could be read ({reasons})")
    ranked, item_text = compose_items(encoder, items, vectors, cfg.item_text, cfg.item_weight, cfg.progress)
    factory = cfg.factory if cfg.factory != "auto" else choose_factory(len(items), encoder.dim, cfg.flat_max,
                                                                       cfg.max_memory_gb)
    use_gpu = cfg.gpu_index == "yes" or (cfg.gpu_index == "auto" and encoder.device.type == "cuda")
    try:
        built = build_index(vectors if ranked is None else ranked, factory, cfg.recall_target, use_gpu=use_gpu)
    except (ValueError, RuntimeError) as exc:
        raise BuildError(f"cannot build the {factory} index: {exc}") from exc
    embedded = len(items) - len(plan.reuse)
    version = new_version_name(cfg.out, encoder.fingerprint)
    result = BuildResult(version, len(items), embedded, len(plan.reuse), len(skipped),
                         round(time.perf_counter() - t0, 3), rate,
                         built.factory, built.recall_at_10)
    columns = build_columns(types, [item["metadata"] for item in items])
    manifest = _manifest(cfg, encoder, built, result, base)
    manifest["item_text"] = item_text
    manifest["index_vectors"] = store.EMBEDDINGS_FILE if ranked is None else store.INDEX_VECTORS_FILE
    manifest["fields"] = describe(columns)
    report = {"version": version, "counts": asdict(result), "skipped": skipped}
    write_version(cfg.out, version, vectors, items, built.index, manifest, report, ranked, columns)
    store.IndexRoot(cfg.out).publish(version)
    prune(cfg.out, cfg.keep)
    shutil.rmtree(cfg.out / STAGING, ignore_errors=True)
    result.seconds = round(time.perf_counter() - t0, 3)
    return result


def _manifest(cfg: BuildConfig, encoder, built, result: BuildResult, base: Base | None) -> dict:
    model = str(Path(cfg.model).resolve()) if Path(cfg.model).exists() else cfg.model
    return {
        "format": 1, "version": result.version, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": model, "adapter": str(Path(cfg.adapter).resolve()) if cfg.adapter else None,
        "fingerprint": encoder.fingerprint, "base_fingerprint": encoder.base_fingerprint,
        "runtime": cfg.runtime, "dim": encoder.dim, "count": result.count, "metric": "ip", "normalized": True,
        "factory": built.factory, "search_params": built.search_params, "rerank": built.rerank,
        "recall_at_10": built.recall_at_10,
        "default_alpha": cfg.alpha, "gallery": str(Path(cfg.gallery).resolve()),
        "previous": base.version if base else None, "built_on_gpu": built.on_gpu,
        "counts": {"embedded": result.embedded, "reused": result.reused, "skipped": result.skipped},
        "faiss": faiss.__version__,
    }
