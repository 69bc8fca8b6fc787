"""`--executor ray`: the embedding stage as a Ray Data job; the FAISS build stays on the driver.

CPU tasks read, hash, decode and preprocess files; one encoder actor per GPU (or one CPU actor
on a GPU-less cluster) embeds the batches; the driver streams the results into the same crash-
safe shards as the local executor. The cluster is `RAY_ADDRESS` (unset: a local Ray instance).
Model and gallery paths must be readable from every node (shared storage or a hub model id).
"""

from __future__ import annotations

import logging
import os

import numpy as np
import ray
import torch
from PIL import Image

from cir.encoder import load_encoder
from cir.pipeline import ImageFileDataset
from cir.pixels import map_pixels

log = logging.getLogger(__name__)

PIXELS = "pixels"


def pixel_columns(items: list[dict], blank) -> dict[str, np.ndarray]:
    """Ray Data columns are arrays: pixels -> 'pixels', a NaFlex dict -> one 'pixels.<key>' column per tensor."""
    if not isinstance(blank, dict):
        return {PIXELS: np.stack([(it[PIXELS] if PIXELS in it else blank).numpy() for it in items])}
    return {f"{PIXELS}.{key}": np.stack([(it[PIXELS][key] if PIXELS in it else empty).numpy() for it in items])
            for key, empty in blank.items()}


def columns_to_pixels(batch: dict, rows: np.ndarray):
    """The selected rows of the pixel columns as the encoder's pixels (a tensor or a dict)."""
    if PIXELS in batch:
        return torch.from_numpy(np.ascontiguousarray(batch[PIXELS][rows]))
    prefix = PIXELS + "."
    return {k[len(prefix):]: torch.from_numpy(np.ascontiguousarray(v[rows])) for k, v in batch.items()
            if k.startswith(prefix)}


def decode_batch(batch: dict, preprocess, max_pixels: int, max_bytes: int, blank) -> dict:
    """Ray Data CPU stage: file -> (pixels, size, sha256) or an error, via cir.pipeline's dataset."""
    data = ImageFileDataset(list(batch["path"]), preprocess, hash_files=True, max_pixels=max_pixels,
                            max_bytes=max_bytes)
    items = [data[i] for i in range(len(data))]
    return {
        "position": np.asarray(batch["position"], dtype=np.int64),
        **pixel_columns(items, blank),
        "width": np.array([it["size"][0] if "pixels" in it else 0 for it in items], dtype=np.int64),
        "height": np.array([it["size"][1] if "pixels" in it else 0 for it in items], dtype=np.int64),
        "sha256": np.array([it.get("sha256") or "" for it in items], dtype=object),
        "error": np.array([it.get("error", "") for it in items], dtype=object),
    }


class Embedder:
    """Ray Data actor stage: one encoder per actor (per GPU), embedding the decoded rows."""

    def __init__(self, model: str, adapter: str | None, device: str, dtype: str):
        self.encoder = load_encoder(model, adapter, device=device, dtype=dtype)

    def __call__(self, batch: dict) -> dict:
        ok = batch["error"] == ""
        emb = np.zeros((len(ok), self.encoder.dim), np.float32)
        if ok.any():
            emb[ok] = self.encoder.encode_pixels(columns_to_pixels(batch, ok))
        out = {k: v for k, v in batch.items() if k != PIXELS and not k.startswith(PIXELS + ".")}
        out["embedding"] = emb
        return out


def _actor_resources() -> tuple[int, float]:
    gpus = int(ray.cluster_resources().get("GPU", 0))
    return (gpus, 1.0) if gpus > 0 else (1, 0.0)


def embed_ray(cfg, encoder, paths, ranges, todo, writer, bar) -> None:
    """Embed the unfinished shards on Ray and feed the results to the shard writer."""
    started = not ray.is_initialized()
    if started:
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, include_dashboard=False,
                 log_to_driver=False, logging_level=logging.WARNING)
    try:
        _run(cfg, encoder, paths, ranges, todo, writer, bar)
    finally:
        if started:
            ray.shutdown()


def _run(cfg, encoder, paths, ranges, todo, writer, bar) -> None:
    rows = [{"position": p, "path": paths[p]} for k in todo for p in range(*ranges[k])]
    actors, gpus_each = _actor_resources()
    blank = map_pixels(torch.zeros_like, encoder.preprocess(Image.new("RGB", (8, 8))))
    log.info("ray: %d images, %d encoder actor(s) with %s GPU each", len(rows), actors, gpus_each)
    ds = ray.data.from_items(rows, override_num_blocks=max(1, len(rows) // max(cfg.batch_size, 1)))
    decode_args = {"preprocess": encoder.preprocess, "max_pixels": cfg.max_pixels, "max_bytes": cfg.max_file_bytes,
                   "blank": blank}
    ds = ds.map_batches(decode_batch, fn_kwargs=decode_args, batch_size=cfg.batch_size, num_cpus=1)
    device = "auto" if gpus_each else "cpu"
    ds = ds.map_batches(Embedder, fn_constructor_args=(cfg.model, str(cfg.adapter) if cfg.adapter else None,
                                                       device, cfg.dtype),
                        batch_size=cfg.batch_size, compute=ray.data.ActorPoolStrategy(size=actors),
                        num_gpus=gpus_each, num_cpus=0 if gpus_each else 1)
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        ok = batch["error"] == ""
        pos = batch["position"]
        writer.add(pos[ok].tolist(), batch["embedding"][ok],
                   list(zip(batch["width"][ok].tolist(), batch["height"][ok].tolist())),
                   [str(h) for h in batch["sha256"][ok]],
                   [(int(p), str(e)) for p, e in zip(pos[~ok], batch["error"][~ok])])
        bar.update(len(pos))
