"""Train the built-in toy CLIP from scratch on the shapes world (the `toy` model shipped in cir/assets/toy).

    python -m training.toy.model --out cir/assets/toy --seed 0

Symmetric contrastive loss with a learned temperature, multi-positive: a partial caption is a
positive for every image in the batch it truly describes (training.loss, the TAT job's loss;
warmup and cosine decay by training.runtime.warmup_cosine, the TAT job's schedule). Held-out combinations are never
rendered for training. Deterministic for a seed on a fixed thread count; resumable from the
checkpoint it writes every --checkpoint-every steps.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import transformers
from tqdm import tqdm

from cir.fusion import l2_normalize
from cir.toyworld import ATTRIBUTES, all_combinations, is_heldout, render_array
from cir.toyworld.layouts import write_json
from training.loss import contrastive_loss
from training.runtime import warmup_cosine
from training.toy.arch import ArchConfig, build_model, build_tokenizer, pixels_from_uint8
from training.toy.checkpoint import resume, save_checkpoint, save_package
from training.toy.data import RenderPool
from training.toy.report import best_alpha, evaluate, format_report, zero_shot_prompts

log = logging.getLogger(__name__)
MAX_LOGIT_SCALE = math.log(100.0)  # CLIP's clamp; transformers does not apply it
PROBE_STREAM = 200
BATCH_STREAM = 300


@dataclass(frozen=True)
class ToyTrainConfig:
    """Everything that determines the trained weights."""

    out: str = "cir/assets/toy"
    seed: int = 0
    steps: int = 3000
    batch_size: int = 128
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 0.1
    renders_per_combo: int = 48
    probe_every: int = 250
    checkpoint_every: int = 500
    checkpoint_dir: str = "runs/toy_model"  # (the folder name predates the training.toy package)
    threads: int = 1
    device: str = "cpu"
    arch: ArchConfig = field(default_factory=ArchConfig)

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 2 or self.renders_per_combo < 1:
            raise ValueError("steps >= 1, batch_size >= 2 and renders_per_combo >= 1 are required")
        if not 0 < self.lr < 1 or self.warmup < 0 or self.weight_decay < 0:
            raise ValueError("lr must lie in (0, 1); warmup and weight_decay must be >= 0")
        if self.threads < 1 or self.probe_every < 1 or self.checkpoint_every < 1:
            raise ValueError("threads, probe_every and checkpoint_every must be >= 1")


def make_optimizer(model: torch.nn.Module, cfg: ToyTrainConfig) -> torch.optim.AdamW:
    """AdamW; no weight decay on biases, norms, embeddings and the temperature."""
    decay, keep = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim >= 2 and "embedding" not in name else keep).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": keep, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)


class Probe:
    """Zero-shot attribute accuracy on one fresh render of every combination (logged during training)."""

    def __init__(self, cfg: ToyTrainConfig, tokenizer):
        combos = all_combinations()
        arrays = np.stack([render_array(a, np.random.default_rng([cfg.seed, PROBE_STREAM, i]), cfg.arch.image_size)
                           for i, a in enumerate(combos)])
        self.pixels = pixels_from_uint8(torch.from_numpy(arrays)).to(cfg.device)
        self.attrs = [a.as_dict() for a in combos]
        self.held = np.array([is_heldout(a) for a in combos])
        self.prompts = {n: zero_shot_prompts(n) for n in ATTRIBUTES}
        self.tokens = {n: tokenizer(list(p.values()), padding=True, return_tensors="pt").to(cfg.device)
                       for n, p in self.prompts.items()}

    @torch.no_grad()
    def __call__(self, model) -> dict[str, float]:
        """Accuracy per attribute, plus the shape accuracy on held-out combinations."""
        model.eval()
        img = l2_normalize(model.get_image_features(pixel_values=self.pixels).pooler_output)
        out = {}
        for name, prompts in self.prompts.items():
            txt = l2_normalize(model.get_text_features(**self.tokens[name]).pooler_output)
            values = list(prompts)
            correct = np.array([values[p] == a[name] for p, a in zip((img @ txt.T).argmax(1).tolist(), self.attrs)])
            out[name] = float(correct.mean())
            if name == "shape":
                out["shape_heldout"] = float(correct[self.held].mean())
        model.train()
        return out


@contextlib.contextmanager
def torch_settings(threads: int, warn_only: bool):
    """Fix the thread count and deterministic kernels for a run; restore the caller's settings after."""
    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled())
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=warn_only)
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        torch.use_deterministic_algorithms(before[1], warn_only=before[2])


def train(cfg: ToyTrainConfig, progress: bool = True) -> tuple[torch.nn.Module, object, list, float]:
    """Train the toy CLIP; returns (model, tokenizer, probe curve, seconds per step)."""
    with torch_settings(cfg.threads, warn_only=cfg.device != "cpu"):
        return _train(cfg, progress)


def _train(cfg: ToyTrainConfig, progress: bool) -> tuple[torch.nn.Module, object, list, float]:
    torch.manual_seed(cfg.seed)
    tokenizer = build_tokenizer(cfg.arch.max_text_len)
    model = build_model(cfg.arch, len(tokenizer)).to(cfg.device).train()
    pool = RenderPool(cfg.seed, cfg.renders_per_combo, cfg.arch.image_size, progress)
    probe = Probe(cfg, tokenizer)
    opt = make_optimizer(model, cfg)
    rng = np.random.default_rng([cfg.seed, BATCH_STREAM])
    ckpt = Path(cfg.checkpoint_dir) / f"seed{cfg.seed}.pt"
    start, curve = resume(ckpt, model, opt, rng, cfg)
    t0 = time.perf_counter()
    bar = tqdm(range(start, cfg.steps), desc="toy CLIP", disable=not progress, initial=start, total=cfg.steps)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = warmup_cosine(step, cfg.warmup, cfg.steps, cfg.lr)
        batch = pool.sample(cfg.batch_size, rng)
        tokens = tokenizer(batch.captions, padding=True, return_tensors="pt").to(cfg.device)
        pixels = pixels_from_uint8(batch.images).to(cfg.device)
        img = l2_normalize(model.get_image_features(pixel_values=pixels).pooler_output)
        txt = l2_normalize(model.get_text_features(**tokens).pooler_output)
        # batch.positives is [image, caption]; the loss takes [caption, image]
        loss = contrastive_loss(img, txt, batch.positives.T, model.logit_scale.exp())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        if (step + 1) % cfg.probe_every == 0 or step + 1 == cfg.steps:
            acc = probe(model)
            curve.append({"step": step + 1, "loss": round(loss.item(), 4),
                          "logit_scale": round(model.logit_scale.exp().item(), 2),
                          **{k: round(v, 3) for k, v in acc.items()}})
            log.info("step %d %s", step + 1, curve[-1])
            bar.set_postfix(loss=f"{loss.item():.3f}", shape=f"{acc['shape']:.2f}")
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
            save_checkpoint(ckpt, step + 1, model, opt, rng, curve, cfg)
    sec_per_step = (time.perf_counter() - t0) / max(1, cfg.steps - start)
    ckpt.unlink(missing_ok=True)  # finished: a rerun must train again, not resume at the end
    return model.cpu().eval(), tokenizer, curve, sec_per_step


def summary(report: dict) -> dict:
    """The headline numbers of an evaluation report (for training_info.json and the docs)."""
    alpha = best_alpha(report)
    r = report["retrieval"]
    pick = {"image": r["image"], "text": r["text"], "linear": r["linear"], f"slerp@{alpha}": r[f"slerp@{alpha}"]}
    return {
        "zero_shot": {k: round(v, 3) for k, v in report["zero_shot"].items()},
        "zero_shot_heldout": {k: round(v, 3) for k, v in report["zero_shot_heldout"].items()},
        "best_slerp_alpha": alpha,
        "recall": {m: {s: {k: round(x, 1) for k, x in v.items() if k in ("R@1", "R@10")} for s, v in splits.items()}
                   for m, splits in pick.items()},
        "text_to_image": {k: round(v, 1) for k, v in report["text_to_image"].items()},
        "modality_gap": {k: round(v, 3) for k, v in report["modality_gap"].items()},
    }


def build_parser() -> argparse.ArgumentParser:
    """Arguments of the toy-model trainer (defaults are the committed recipe)."""
    d, a = ToyTrainConfig(), ArchConfig()
    p = argparse.ArgumentParser(prog="python -m training.toy.model", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=d.out, help=f"model directory to write (default {d.out})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"training seed (default {d.seed})")
    p.add_argument("--steps", type=int, default=d.steps, help=f"optimiser steps (default {d.steps})")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"batch size (default {d.batch_size})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"peak AdamW learning rate (default {d.lr})")
    p.add_argument("--warmup", type=int, default=d.warmup, help=f"linear warmup steps (default {d.warmup})")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay,
                   help=f"AdamW weight decay (default {d.weight_decay})")
    p.add_argument("--renders-per-combo", type=int, default=d.renders_per_combo,
                   help=f"pre-rendered training images per seen combination (default {d.renders_per_combo})")
    p.add_argument("--width", type=int, default=a.width, help=f"tower width (default {a.width})")
    p.add_argument("--vision-layers", type=int, default=a.vision_layers,
                   help=f"vision layers (default {a.vision_layers})")
    p.add_argument("--text-layers", type=int, default=a.text_layers, help=f"text layers (default {a.text_layers})")
    p.add_argument("--probe-every", type=int, default=d.probe_every, help="log zero-shot accuracy every N steps")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, help="checkpoint every N steps")
    p.add_argument("--checkpoint-dir", default=d.checkpoint_dir,
                   help=f"where to checkpoint and resume (default {d.checkpoint_dir})")
    p.add_argument("--threads", type=int, default=d.threads, help=f"torch CPU threads (default {d.threads})")
    p.add_argument("--device", default=d.device, help="torch device (default cpu; the shipped model is CPU-trained)")
    p.add_argument("--eval-seed", type=int, default=1, help="seed of the fresh evaluation world (default 1)")
    p.add_argument("--no-eval", action="store_true", help="skip the final evaluation report")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _config_from(args) -> ToyTrainConfig:
    arch = ArchConfig(width=args.width, vision_layers=args.vision_layers, text_layers=args.text_layers)
    return ToyTrainConfig(out=args.out, seed=args.seed, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                          warmup=args.warmup, weight_decay=args.weight_decay, renders_per_combo=args.renders_per_combo,
                          probe_every=args.probe_every, checkpoint_every=args.checkpoint_every,
                          checkpoint_dir=args.checkpoint_dir, threads=args.threads, device=args.device,
                          arch=arch)


def main(argv: list[str] | None = None) -> int:
    """Train, save to --out, evaluate on a fresh world and write training_info.json."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        cfg = _config_from(args)
    except ValueError as exc:
        print(f"training.toy.model: error: {exc}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    model, tokenizer, curve, sec_per_step = train(cfg, progress=not args.quiet)
    train_s = time.perf_counter() - t0
    out = Path(cfg.out)
    save_package(model, tokenizer, cfg.arch.image_size, out)
    info = {
        "command": "python -m training.toy.model " + " ".join(argv), "seed": cfg.seed, "steps": cfg.steps,
        "config": dataclasses.asdict(cfg), "train_seconds": round(train_s, 1),
        "seconds_per_step": round(sec_per_step, 3),
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights_mb": round((out / "model.safetensors").stat().st_size / 1e6, 2),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "curve": curve,
    }
    if not args.no_eval:
        report = evaluate(str(out), seed=args.eval_seed)
        print(format_report(report))
        info["eval_command"] = f"python -m training.toy.report --model {cfg.out} --seed {args.eval_seed}"
        info["final_metrics"] = {"eval_seed": args.eval_seed, **summary(report)}
    write_json(out / "training_info.json", info, indent=2)
    print(f"wrote {out} ({info['weights_mb']} MB) in {train_s / 60:.1f} min, {sec_per_step:.3f} s/step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
