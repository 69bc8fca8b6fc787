"""`cir index build`: plan (reuse vs embed), embed in shards, assemble, build, verify, publish."""

from __future__ import annotations

import errno
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np
from tqdm import tqdm

from cir import index_store as store
from cir.columns import build_columns, describe
from cir.encoder import loading_bars
from cir.images import IMAGE_EXTENSIONS
from cir.models import ModelLoadError
from cir.pipeline import iter_embedded_batches
from cir.runtimes import load_runtime_encoder
from cir.stores.faiss_root import FaissRootStore, discard_changes, pending_changes
from indexer.config import BuildConfig
from indexer.errors import BuildError, OutputError
from indexer.skips import over_limit, summary
from indexer.factory import build_index, choose_factory
from indexer.gallery import GalleryEntry, GalleryError, field_types, printable, read_gallery
from indexer.items import compose_items
from indexer.plan import Base, Plan, load_base, make_plan, unchanged
from indexer.shards import STAGING, ShardStore, ShardWriter, shard_ranges, staging_key
from cir.versioning import check_writable, new_version_name, prune, remove_stale_tmp, root_lock, write_version

log = logging.getLogger(__name__)


@dataclass
class BuildResult:
    """What a finished build did (the `--json` line); status 'published' or 'unchanged' (nothing published)."""

    version: str
    count: int
    embedded: int
    reused: int
    skipped: int
    seconds: float
    images_per_s: float
    factory: str = ""
    recall_at_10: float = 1.0
    status: str = "published"


def embed_local(cfg: BuildConfig, encoder, paths: list[str], ranges, todo: list[int], writer: ShardWriter, bar) -> None:
    """The local executor: DataLoader workers decode, this process encodes; shards as they finish."""
    batches = []
    for k in todo:
        start, stop = ranges[k]
        batches += [list(range(i, min(i + cfg.batch_size, stop))) for i in range(start, stop, cfg.batch_size)]
    for b in iter_embedded_batches(encoder, paths, batches, workers=cfg.workers, hash_files=True,
                                   max_pixels=cfg.max_pixels, max_bytes=cfg.max_file_bytes):
        writer.add(b.indices, b.embeddings, b.sizes, b.hashes, b.failed)
        bar.update(len(b.indices) + len(b.failed))


def run_embedding(cfg: BuildConfig, encoder, plan: Plan, executor=embed_local) -> tuple[ShardStore, list, float]:
    """Embed the plan's work list into shards, skipping finished ones; returns (store, ranges, images/s)."""
    paths = [plan.entries[i].path for i in plan.work]
    work_rows = [(p, *plan.stats[i]) for p, i in zip(paths, plan.work)]
    shards = ShardStore(cfg.out, staging_key(encoder.fingerprint, work_rows, cfg.batch_size,
                                             cfg.shard_size, cfg.max_pixels, cfg.max_file_bytes))
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
    skip_list = [{"id": plan.entries[i].id, "path": printable(plan.entries[i].path), "reason": r}
                 for i, r in sorted(skipped.items())]
    return items, vectors, skip_list


def _prepare(cfg: BuildConfig) -> tuple[list[GalleryEntry], dict[str, str]]:
    try:
        entries = read_gallery(cfg.gallery, cfg.follow_symlinks)
        types = field_types(cfg.gallery, entries)  # before any embedding: a bad manifest fails fast
    except GalleryError as exc:
        raise BuildError(str(exc)) from exc
    if not entries:
        raise BuildError(f"gallery {cfg.gallery} contains no images ({' '.join(e[1:] for e in IMAGE_EXTENSIONS)})")
    try:
        check_writable(cfg.out)
    except OutputError as exc:
        raise BuildError(str(exc)) from exc
    return entries, types


def _load(cfg: BuildConfig):
    try:
        # With Ray the actors embed; the driver only needs the encoder's identity and dim.
        device = "cpu" if cfg.executor == "ray" else cfg.device
        with loading_bars(cfg.progress):  # --no-progress: no "Loading weights" bar either
            return load_runtime_encoder(cfg.model, cfg.adapter, device=device, dtype=cfg.dtype,
                                        runtime=cfg.runtime, onnx_cache=cfg.onnx_cache)
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
    except OSError as exc:
        raise BuildError(_write_failure(cfg.out, exc)) from exc


def _write_failure(root: Path, exc: OSError) -> str:
    what = "the disk is full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "a write failed"
    staging = root / STAGING
    kept = sum(1 for _ in staging.glob("*/shard-*.npz")) if staging.is_dir() else 0
    return (f"{what} under {root} ({exc}); nothing was published and the published version is untouched. "
            f"{kept} finished embedding shards are kept in {staging} so that rerunning the same command "
            "resumes (delete that folder to free their space)")


def index_settings(cfg: BuildConfig, factory: str) -> dict:
    """The settings that shape a version besides its items (compared to decide 'unchanged')."""
    text = [cfg.item_text, cfg.item_weight] if cfg.item_text else None
    return {"factory": factory, "recall_target": cfg.recall_target, "default_alpha": cfg.alpha, "item_text": text}


def manifest_settings(manifest: dict) -> dict:
    """index_settings as a published version's manifest records them."""
    text = manifest.get("item_text")
    return {"factory": manifest.get("factory"), "recall_target": manifest.get("recall_target"),
            "default_alpha": manifest.get("default_alpha"),
            "item_text": [text["field"], text["alpha"]] if text else None}


def _check_live(cfg: BuildConfig) -> None:
    """Refuse to build over live changes not folded into a version, unless told to discard them."""
    pending = pending_changes(cfg.out) if not cfg.discard_live_changes else 0
    if pending:
        raise BuildError(f"{cfg.out} has {pending} live changes (API or `cir index apply` writes) not yet folded into "
                         f"a version: run `cir index compact {cfg.out}` first to keep them, or pass "
                         "--discard-live-changes to build without them")


def _publish(cfg: BuildConfig, version: str) -> None:
    """Publish under the root's write lock, so no live write lands between the last check and the switch."""
    with FaissRootStore(cfg.out).write_lock():
        _check_live(cfg)
        if cfg.discard_live_changes:
            discard_changes(cfg.out)
        store.IndexRoot(cfg.out).publish(version)


def _build_locked(cfg: BuildConfig, entries, types: dict[str, str], encoder, t0: float, executor) -> BuildResult:
    remove_stale_tmp(cfg.out)
    _check_live(cfg)
    base = load_base(cfg.out, encoder.fingerprint, cfg.force_new)
    plan = make_plan(entries, base, cfg.max_file_bytes)
    shards, ranges, rate = run_embedding(cfg, encoder, plan, executor)
    items, vectors, skipped = assemble(plan, base, shards, ranges, encoder.dim)
    if not items:
        reasons = "; ".join(f"{s['id']}: {s['reason']}" for s in skipped[:3])
        raise BuildError(f"none of the {len(entries)} gallery files could be read ({reasons})")
    if over_limit(cfg.max_skipped, len(skipped), len(entries)):
        raise BuildError(f"{len(skipped)} of {len(entries)} gallery files were skipped ({summary(skipped)}), over "
                         f"--max-skipped {cfg.max_skipped}: nothing published (fix the files and rerun: finished "
                         "embeddings are reused)")
    factory = cfg.factory if cfg.factory != "auto" else choose_factory(len(items), encoder.dim, cfg.flat_max,
                                                                       cfg.max_memory_gb)
    embedded = len(items) - len(plan.reuse)
    if not cfg.force_new and unchanged(base, items, skipped) and \
            index_settings(cfg, factory) == manifest_settings(base.manifest):
        shutil.rmtree(cfg.out / STAGING, ignore_errors=True)
        return BuildResult(base.version, len(items), embedded, len(plan.reuse), len(skipped),
                           round(time.perf_counter() - t0, 3), rate, base.manifest["factory"],
                           base.manifest.get("recall_at_10", 1.0), status="unchanged")
    ranked, item_text = compose_items(encoder, items, vectors, cfg.item_text, cfg.item_weight, cfg.progress)
    use_gpu = cfg.gpu_index == "yes" or (cfg.gpu_index == "auto" and encoder.device.type == "cuda")
    try:
        built = build_index(vectors if ranked is None else ranked, factory, cfg.recall_target, use_gpu=use_gpu)
    except (ValueError, RuntimeError) as exc:
        raise BuildError(f"cannot build the {factory} index: {exc}") from exc
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
    _publish(cfg, version)
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
        "recall_at_10": built.recall_at_10, "recall_target": cfg.recall_target,
        "default_alpha": cfg.alpha, "gallery": str(Path(cfg.gallery).resolve()),
        "previous": base.version if base else None, "built_on_gpu": built.on_gpu,
        "counts": {"embedded": result.embedded, "reused": result.reused, "skipped": result.skipped},
        "faiss": faiss.__version__,
    }
