"""The TAT training loop: LoRA on the image tower pulled toward the frozen text tower.

Read top to bottom: `train` sets up (output folder, model, data, 'before' measurements; see
job.py), `_run_steps` is the plain loop (micro-batches -> loss -> all-reduce -> AdamW step ->
log -> checkpoint), and `finish` saves the adapter and measures 'after'.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from cir.encoder import model_family, resolve_device
from cir.fusion import l2_normalize
from training import checkpoint as ckpt
from training import distributed as D
from training.batches import PairBatches, make_loader
from training.config import TrainConfig
from training.job import REPORT_FILE, Job, build_job, finish, start
from training.lora import (
    adapter_shape,
    add_lora,
    load_init_adapter,
    parameter_counts,
    set_lora_train_mode,
    trainable_parameters,
)
from training.loss import contrastive_loss, positives_matrix
from training.runtime import RunState, StopFlag, TrainLog, seed_everything, warmup_cosine
from training.supervised import TripletBatches, hard_negatives, index_alpha, triplet_loss

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """How a run ended: 'complete' or 'interrupted' (by a signal, after a checkpoint)."""

    status: str
    step: int
    out: Path
    report: dict | None = None
    signal: int | None = None


def _autocast(encoder):
    if encoder.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=encoder.device.type, dtype=encoder.autocast_dtype)


def micro_loss(encoder, batch: dict, mode: str, scale: float, info: D.DistInfo, local_size: int):
    """Global-batch loss of one micro-batch (None if under 2 pairs); autograd reaches this rank's images only."""
    captions = batch["captions"]
    if captions:
        with _autocast(encoder):
            feats = encoder.image_features(batch["pixels"])
        image = l2_normalize(feats.float())
        text = torch.from_numpy(encoder.encode_texts(captions)).to(encoder.device)  # frozen: no graph
    else:
        image = text = torch.zeros((0, encoder.dim), device=encoder.device)
    image, _ = D.gather_padded(image, local_size, info)
    text, _ = D.gather_padded(text, local_size, info)
    labels = D.gather_objects((captions, batch["meta"]), info)
    all_captions = [c for part in labels for c in part[0]]
    all_meta = [m for part in labels for m in part[1]]
    if len(all_captions) < 2:
        return None
    return contrastive_loss(image, text, positives_matrix(all_captions, all_meta, mode), scale)


def _checkpoint(job: Job, state: RunState) -> None:
    rngs = D.gather_objects(ckpt.rng_state(), job.info)
    if job.info.main:
        payload = {"step": state.step, "next_micro": state.step * job.cfg.grad_accum,
                   "trainable": {n: p.detach().cpu() for n, p in trainable_parameters(job.model).items()},
                   "optimizer": job.optimizer.state_dict(), "scheduler": job.scheduler.state_dict(),
                   "rng": rngs, "state": vars(state)}
        ckpt.save_checkpoint(job.out, state.step, payload, job.cfg.keep_checkpoints)
    D.barrier(job.info)


def _restore(job: Job, saved: dict) -> RunState:
    params = trainable_parameters(job.model)
    with torch.no_grad():
        for name, value in saved["trainable"].items():
            params[name].copy_(value.to(params[name].device))
    job.optimizer.load_state_dict(saved["optimizer"])
    job.scheduler.load_state_dict(saved["scheduler"])
    rngs = saved["rng"]
    if len(rngs) == job.info.world_size:
        ckpt.set_rng_state(rngs[job.info.rank])
    else:
        log.warning("checkpoint written by %d ranks, resuming on %d: dropout RNG reseeded", len(rngs),
                    job.info.world_size)
        seed_everything(job.cfg.seed + 1000 * saved["step"] + job.info.rank)
    return RunState(**saved["state"])


def _step(job: Job, state: RunState, loader, params: list) -> tuple[float, int]:
    """One optimiser step over its micro-batches; returns (mean loss, images used on all ranks)."""
    accum, info = job.cfg.grad_accum, job.info
    micro = range(state.step * accum, min((state.step + 1) * accum, job.micro_end))
    job.optimizer.zero_grad(set_to_none=True)
    step_loss, images = 0.0, 0
    for _ in micro:
        batch = next(loader)
        state.count_batch(batch)
        images += len(batch["captions"])
        if job.triplets:
            loss = triplet_loss(job.encoder, batch, job.alpha, job.scale, info, job.plan.local_size, job.cfg.text_lora)
        else:
            loss = micro_loss(job.encoder, batch, job.mode, job.scale, info, job.plan.local_size)
        if loss is None:
            continue
        step_loss += loss.item() / len(micro)
        if batch["captions"]:
            # every rank holds the global loss; gradients through each rank's own features sum to its gradient
            (loss * info.world_size / len(micro)).backward()
    D.sum_gradients(params, info)
    job.optimizer.step()
    job.scheduler.step()
    return step_loss, sum(D.gather_objects(images, info))


def _run_steps(job: Job, state: RunState, stop: StopFlag, on_step=None) -> bool:
    """Train from state.step to job.steps; returns False when stopped early by a signal."""
    cfg, info = job.cfg, job.info
    params = list(trainable_parameters(job.model).values())
    if job.triplets:
        dataset = TripletBatches(job.source, job.encoder.preprocess, job.plan.local_batch, job.negatives)
    else:
        dataset = PairBatches(job.source, job.encoder.preprocess, job.plan.local_batch)
    loader = make_loader(dataset, range(state.step * cfg.grad_accum, job.micro_end), cfg.workers,
                         pin_memory=job.encoder.device.type == "cuda")
    train_log = TrainLog(job.out, cfg.log_every, info.main)
    bar = tqdm(total=job.steps, initial=state.step, desc="cir" if job.triplets else "tat", unit="step",
               disable=not (cfg.progress and info.main), dynamic_ncols=True)
    set_lora_train_mode(job.model)
    while state.step < job.steps:
        t0, lr = time.perf_counter(), job.optimizer.param_groups[0]["lr"]
        loss, images = _step(job, state, loader, params)
        state.step += 1
        state.images += images
        state.seconds += time.perf_counter() - t0
        epoch = (state.step * cfg.grad_accum - 1) // job.plan.micro_per_epoch
        row = train_log.add(state, loss, lr, images, epoch, last=state.step == job.steps)
        if row:
            bar.set_postfix(loss=f"{row['loss']:.4f}", img_s=f"{row['images_per_s']:.0f}")
        bar.update(1)
        if on_step is not None:
            on_step(state.step)
        stopping = D.any_rank(stop.signum is not None, info)
        if stopping or (cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0):
            _checkpoint(job, state)
        if stopping:
            break
    bar.close()
    return state.step >= job.steps


def _prepare_model(job: Job, saved: dict | None) -> RunState:
    """Wrap the image tower with LoRA, build AdamW and the schedule, restore a checkpoint if any."""
    cfg, info = job.cfg, job.info
    seed_everything(cfg.seed)  # identical LoRA initialisation on every rank and on resume
    text_targets = (model_family(cfg.model).lora_targets if cfg.init_adapter else cfg.lora_targets) \
        if cfg.text_lora else None
    job.model = add_lora(job.encoder.model, cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets,
                         text_targets)
    if cfg.init_adapter and not saved:
        load_init_adapter(job.model, cfg.init_adapter, job.encoder.base_fingerprint)
    params = list(trainable_parameters(job.model).values())
    job.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    job.scheduler = torch.optim.lr_scheduler.LambdaLR(job.optimizer, lambda s: warmup_cosine(s, job.warmup, job.steps))
    seed_everything(cfg.seed + info.rank)  # LoRA dropout differs per rank
    return _restore(job, saved) if saved else RunState()


def resolve_config(cfg: TrainConfig) -> TrainConfig:
    """Fill in what depends on other files, before the run's identity is written or compared.

    LoRA targets default to the model family's; --init-adapter fixes rank, alpha and targets to the
    adapter's; a triplet run's alpha defaults to the index's (--hard-negatives, else --gallery).
    """
    if cfg.init_adapter:
        cfg = cfg.replace(**adapter_shape(cfg.init_adapter))
    if cfg.lora_targets is None:
        cfg = cfg.replace(lora_targets=model_family(cfg.model).lora_targets)
    if cfg.objective == "triplets" and cfg.alpha is None:
        option = "--hard-negatives" if cfg.hard_negatives else "--gallery"
        cfg = cfg.replace(alpha=index_alpha(cfg.hard_negatives or cfg.gallery, option))
    return cfg


def train(cfg: TrainConfig, on_step=None) -> TrainResult:
    """Run (or resume) a TAT job; returns how it ended. Raises ValueError/ModelLoadError on bad input."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    cfg = resolve_config(cfg)
    device = str(resolve_device(cfg.device))
    info = D.init_distributed(torch.device(device).type)
    try:
        out_mode = ckpt.check_out_dir(cfg)
        D.barrier(info)  # every rank decides before rank 0 writes anything
        if out_mode == "complete":
            out = Path(cfg.out).expanduser()
            log.info("%s already holds this completed run", out)
            return TrainResult("complete", (ckpt.read_run(out) or {}).get("steps", 0), out,
                               json.loads((out / REPORT_FILE).read_text()))
        seed_everything(cfg.seed)
        job = build_job(cfg, info, D.device_for(info, device))
        if job.triplets:  # 'before' is the starting point: the base model or the --init-adapter
            saved = ckpt.load_latest(job.out) if out_mode == "resume" else None
            state = _prepare_model(job, saved)
            job.model.eval()
            report = start(job, out_mode)
            if cfg.hard_negatives:
                job.negatives = hard_negatives(job, cfg.hard_negatives, cfg.hard_negatives_per_query)
        else:
            report = start(job, out_mode)
            saved = ckpt.load_latest(job.out) if out_mode == "resume" else None
            state = _prepare_model(job, saved)
        report["parameters"] = parameter_counts(job.model)
        if out_mode == "resume":
            TrainLog(job.out, cfg.log_every, info.main).truncate(state.step)
        with StopFlag() as stop:
            finished = _run_steps(job, state, stop, on_step)
        if not finished:
            return TrainResult("interrupted", state.step, job.out, signal=stop.signum)
        return TrainResult("complete", state.step, job.out, finish(job, state, report))
    finally:
        D.shutdown(info)
