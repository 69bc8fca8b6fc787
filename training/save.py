"""Write a finished run's model: the PEFT adapter + cir_adapter.json, or the merged full model."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np

from cir.io import atomic_write_json, make_temp_dir, restore_mode
from cir.models import ADAPTER_META
from cir.pixels import pixels_len
from training.batches import Chunks, PairBatches

PROBE_IMAGES = 16
METHODS = {("tat", False): "TAT (arXiv 2405.00571): LoRA on the image tower, text tower frozen",
           ("triplets", False): "supervised CIR on triplets: LoRA on the image tower, text tower frozen, "
                                "Slerp queries contrasted with targets",
           ("triplets", True): "supervised CIR on triplets: LoRA on the image and text towers, "
                               "Slerp queries contrasted with targets"}
_SKIP = {"README.md"}  # peft's generated model card says nothing about this run


def _move_files(src: Path, dst: Path) -> list[str]:
    names = []
    for path in sorted(src.iterdir()):
        if path.is_file() and path.name not in _SKIP:
            restore_mode(path)  # safetensors writes 0600; the adapter is for other users too
            os.replace(path, dst / path.name)
            names.append(path.name)
    return names


def adapter_meta(job, steps: int) -> dict:
    """What load_encoder checks (base model and fingerprint) and how the adapter was made."""
    return {"base_model": job.cfg.model, "base_fingerprint": job.encoder.base_fingerprint,
            "method": METHODS[(job.cfg.objective, job.cfg.text_lora)],
            **({"init_adapter": job.cfg.init_adapter, "alpha": job.alpha} if job.triplets else {}),
            "steps": steps, "data": str(job.source.path), "labels": job.mode,
            "logit_scale": job.scale, "config": job.cfg.to_dict(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _probe(job) -> tuple[object, np.ndarray]:
    """A few held-out (or training) images and their embeddings from the in-memory tuned model."""
    indices = job.plan.holdout if len(job.plan.holdout) else job.plan.train
    batch = PairBatches(job.source, job.encoder.preprocess, Chunks(indices[:PROBE_IMAGES], PROBE_IMAGES))[0]
    if not batch["captions"]:
        return None, None
    return batch["pixels"], job.encoder.encode_pixels(batch["pixels"])


def save_outputs(job, state) -> dict:
    """Save the adapter or merged model into the output folder; returns probe data to check a reload."""
    job.model.eval()
    pixels, embeddings = _probe(job)
    tmp = make_temp_dir(job.out, ".tmp-save-")
    try:
        if job.cfg.merge:
            merged = job.model.merge_and_unload()
            merged.save_pretrained(tmp)
            job.encoder.tokenizer.save_pretrained(tmp)
            job.encoder.preprocess.processor.save_pretrained(tmp)
            files = _move_files(tmp, job.out)
        else:
            job.model.save_pretrained(tmp)
            files = _move_files(tmp, job.out)
            atomic_write_json(job.out / ADAPTER_META, adapter_meta(job, state.step))
            files.append(ADAPTER_META)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"files": files, "probe_images": 0 if pixels is None else pixels_len(pixels), "pixels": pixels,
            "embeddings": embeddings}
