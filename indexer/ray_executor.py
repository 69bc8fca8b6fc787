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

log = logging.getLogger(__name__)


def decode_batch(batch: dict, preprocess, max_pixels: int, pixel_shape: tuple) -> dict:
    """Ray Data CPU stage: file -> (pixels, size, sha256) or an error, via cir.pipeline's dataset."""
    data = ImageFileDataset(list(batch["path"]), preprocess, hash_files=True, max_pixels=max_pixels)
    items = [data[i] for i in range(len(data))]
    blank = np.zeros(pixel_shape, np.float32)
    return {
        "position": np.asarray(batch["position"], dtype=np.int64),
        "pixels": np.stack([it["pixels"].numpy() if "pixels" in it else blank for it in items]),
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
            emb[ok] = self.encoder.encode_pixels(torch.from_numpy(np.ascontiguousarray(batch["pixels"][ok])))
        out = {k: v for k, v in batch.items() if k != "pixels"}
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
    shape = tuple(encoder.preprocess(Image.new("RGB", (8, 8))).shape)
    log.info("ray: %d images, %d encoder actor(s) with %s GPU each", len(rows), actors, gpus_each)
    ds = ray.data.from_items(rows, override_num_blocks=max(1, len(rows) // max(cfg.batch_size, 1)))
    ds = ds.map_batches(decode_batch, fn_kwargs={"preprocess": encoder.preprocess, "max_pixels": cfg.max_pixels,
                                                 "pixel_shape": shape}, batch_size=cfg.batch_size, num_cpus=1)
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
