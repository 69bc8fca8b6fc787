"""A TAT run's setup and finish: model, data and schedule; the 'before' and 'after' measurements."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cir.encoder import Encoder, load_encoder, loading_bars
from cir.io import atomic_write_json
from training import checkpoint as ckpt
from training import distributed as D
from training.batches import Plan, auto_holdout
from training.check import SKIP_WARN, preflight
from training.config import TrainConfig
from training.data import DataFormatError, PairSource, open_pairs
from training.loss import resolve_positives
from training.report import compare, measure
from training.runtime import RunState, default_warmup
from training.save import save_outputs
from training.supervised import gallery_view, triplet_recall
from training.triplets import open_triplets

log = logging.getLogger(__name__)

REPORT_FILE = "report.json"


@dataclass
class Job:
    """Everything the loop needs, built once by `train`."""

    cfg: TrainConfig
    info: D.DistInfo
    out: Path
    encoder: Encoder
    source: PairSource
    plan: Plan
    mode: str  # the resolved contrastive labels: pairs, captions or mentions
    scale: float  # the fixed logit scale
    steps: int
    micro_end: int  # one past the last global micro-batch
    warmup: int
    model: object = None
    optimizer: object = None
    scheduler: object = None
    alpha: float | None = None  # triplets: the Slerp text weight of the composed queries
    negatives: dict | None = None  # triplets: mined hard negatives per training triplet

    @property
    def triplets(self) -> bool:
        """Supervised CIR on triplets (else TAT on image-caption pairs)."""
        return self.cfg.objective == "triplets"


def _model_scale(encoder: Encoder, name: str) -> float:
    logit_scale = getattr(encoder.model, "logit_scale", None)
    if logit_scale is None:  # e.g. BLIP's retrieval checkpoints keep no temperature
        raise ValueError(f"{name} ({encoder.family.name}) has no learned logit scale: give --temperature")
    return float(logit_scale.exp().item())


def build_job(cfg: TrainConfig, info: D.DistInfo, device: str) -> Job:
    """Load the base model, index the data, split it and size the schedule."""
    source = open_data(cfg.data, cfg.objective, cfg.gallery, cfg.image_key, cfg.caption_key)  # fails before a slow load
    preflight(source)
    with loading_bars(cfg.progress):  # --no-progress: no "Loading weights" bar either
        encoder = load_encoder(cfg.model, device=device, dtype=cfg.dtype)
    mode = "targets" if cfg.objective == "triplets" else resolve_positives(cfg.positives, source.structured)
    if mode == "mentions" and not source.structured:
        raise ValueError("--positives mentions needs data rows with `mentions` and `attributes` (a shapes world)")
    holdout = auto_holdout(len(source)) if cfg.holdout is None else cfg.holdout
    plan = Plan(len(source), holdout, cfg.batch_size, cfg.seed, info.world_size, info.rank)
    micro_total = cfg.epochs * plan.micro_per_epoch
    steps = cfg.max_steps or math.ceil(micro_total / cfg.grad_accum)
    micro_end = steps * cfg.grad_accum if cfg.max_steps else micro_total
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else default_warmup(steps)
    scale = _model_scale(encoder, cfg.model) if cfg.temperature is None else cfg.logit_scale
    return Job(cfg, info, Path(cfg.out).expanduser(), encoder, source, plan, mode, scale, steps, micro_end,
               min(warmup, steps), alpha=cfg.alpha)


def open_data(data: str, objective: str = "tat", gallery: str | None = None, image_key: str = "image",
              caption_key: str = "caption") -> PairSource:
    """A run's data: image-caption pairs (TAT) or triplets, whose gallery ids resolve through `gallery`."""
    if objective != "triplets":
        return open_pairs(data, image_key, caption_key)
    if gallery is None:
        return open_triplets(data)
    with gallery_view(gallery, "--gallery") as view:
        return open_triplets(data, view)


def _data_info(job: Job) -> dict:
    src = job.source
    return {"path": str(src.path), "format": type(src).__name__.replace("Source", "").lower(),
            "pairs": len(src), "train_pairs": len(job.plan.train), "holdout_pairs": len(job.plan.holdout),
            "incomplete_samples": src.incomplete}


def _measure(job: Job, encoder: Encoder) -> dict:
    cfg = job.cfg
    if not job.triplets:
        return measure(encoder, job.source, job.plan.holdout, cfg.eval_cir, cfg.eval_split, cfg.eval_alpha,
                       cfg.eval_batch_size, cfg.workers)
    section = measure(encoder, job.source, job.plan.holdout[:0], cfg.eval_cir, cfg.eval_split, cfg.eval_alpha,
                      cfg.eval_batch_size, cfg.workers)
    if len(job.plan.holdout):
        section["triplets"] = triplet_recall(encoder, job.source, job.plan.holdout, job.alpha, cfg.eval_batch_size)
    return section


def start(job: Job, out_mode: str) -> dict:
    """Create (or re-open, on resume) the output folder; returns the report so far, with 'before'."""
    cfg, out = job.cfg, job.out
    if out_mode == "resume":
        ckpt.check_base(out, job.encoder.base_fingerprint)
        if job.info.main:
            for path in ckpt.remove_partial(out):
                log.info("removed %s, left half-written by an earlier kill", path)
        if (out / REPORT_FILE).is_file():
            return json.loads((out / REPORT_FILE).read_text())
    report = {"status": "running", "model": cfg.model, "base_fingerprint": job.encoder.base_fingerprint,
              "data": _data_info(job), "labels": job.mode, "logit_scale": round(job.scale, 4),
              "temperature": round(1.0 / job.scale, 5), "steps": job.steps, "warmup_steps": job.warmup,
              "world_size": job.info.world_size, "config": cfg.to_dict()}
    if job.triplets:
        report["alpha"] = job.alpha
    if job.info.main:
        out.mkdir(parents=True, exist_ok=True)
        ckpt.write_run(out, cfg, "running", base_fingerprint=job.encoder.base_fingerprint, data=report["data"])
        report["before"] = _measure(job, job.encoder)
        atomic_write_json(out / REPORT_FILE, report)
    D.barrier(job.info)
    return report


def finish(job: Job, state: RunState, report: dict) -> dict:
    """Save the adapter (or merged model), reload it as users will, measure 'after', write report.json."""
    cfg, out = job.cfg, job.out
    counts = D.sum_counts({"skipped": state.skipped, "seen": state.seen}, job.info)
    skipped, seen = counts["skipped"], counts["seen"]
    if seen and skipped == seen:
        raise DataFormatError(f"none of the {seen} training images loaded ({'; '.join(state.failures[:3])}); "
                              f"{job.source.resolve_hint()}; nothing was saved")
    if job.info.main:
        saved = save_outputs(job, state)
        with loading_bars(cfg.progress):
            after = load_encoder(str(out) if cfg.merge else cfg.model, adapter=None if cfg.merge else out,
                                 device=str(job.encoder.device), dtype=cfg.dtype)
        pixels, embeddings = saved.pop("pixels"), saved.pop("embeddings")
        if pixels is not None:  # the reloaded model must give what the trained one gave
            saved["max_abs_diff"] = float(np.abs(after.encode_pixels(pixels) - embeddings).max())
        report["after"] = _measure(job, after)
        report["change"] = compare(report["before"], report["after"])
        if skipped > SKIP_WARN * seen:
            report["warnings"] = [f"{skipped} of {seen} training images ({100 * skipped / seen:.0f}%) did not load "
                                  "and were skipped (training.skipped_examples lists some)"]
        report.update(status="complete", output="merged" if cfg.merge else "adapter", reload_check=saved,
                      training={"steps": state.step, "images": state.images, "skipped_images": skipped,
                                "skipped_examples": state.failures, "seconds": round(state.seconds, 2),
                                "images_per_s": round(state.images / max(state.seconds, 1e-9), 2)})
        atomic_write_json(out / REPORT_FILE, report)
        ckpt.write_run(out, cfg, "complete", steps=state.step)
    D.barrier(job.info)
    return report
