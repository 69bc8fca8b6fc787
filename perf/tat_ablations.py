"""The paper's TAT ablations on the textured shapes world: which tower to tune, and how.

    python perf/tat_ablations.py --work /tmp/tat_ablations            # ~15 min on 2 CPU cores
    python perf/tat_ablations.py --variants tat --lora-targets q_proj,v_proj --steps 200

Variants (all trained on the same captions with the same contrastive loss, labels and schedule
as `cir train`, whose pieces they reuse: training.loss, training.lora, training.batches,
training.runtime):
- tat: LoRA on the image tower, text tower frozen (the paper's Text-Anchored Tuning; `cir train`)
- both: LoRA on both towers
- image_anchor: LoRA on the text tower, image tower frozen (anchoring on the image side)
- full_vision: every image-tower weight trained, no LoRA, text tower frozen

It generates (or reuses, in --work) a textured training world and a textured evaluation world
with another seed (plus its plain twin), trains each variant in memory and prints CIRR R@1 and
CIRCO mAP@10 (best Slerp alpha of a sweep, seen and held-out targets), the paired
image-caption cosine on held-out training pairs, and plain-world CIRR R@1. The paper reports that
tuning both towers or anchoring on images halves CIRCO mAP (docs/method.md, section 3).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from peft import LoraConfig, get_peft_model

import cir.benchmarks
from cir.encoder import load_encoder
from cir.families import in_tower, text_prefixes, vision_prefixes
from cir.fusion import l2_normalize
from cir.toyworld import generate_world, holds_world
from training.batches import Chunks, PairBatches, Plan, auto_holdout, make_loader
from training.config import PAPER_TEMPERATURE, POSITIVES, TrainConfig
from training.data import open_pairs
from training.lora import select_targets, set_lora_train_mode, target_regex
from training.loss import contrastive_loss, positives_matrix, resolve_positives
from training.report import measure_gap
from training.runtime import default_warmup, seed_everything, warmup_cosine


@dataclasses.dataclass(frozen=True)
class Variant:
    """Which towers train and how: 'lora', 'full' or 'frozen'."""

    vision: str
    text: str


VARIANTS = {
    "tat": Variant("lora", "frozen"),
    "both": Variant("lora", "lora"),
    "image_anchor": Variant("frozen", "lora"),
    "full_vision": Variant("full", "frozen"),
}
ALPHAS = (0.5, 0.6, 0.7, 0.8, 0.9)
SIZES = {"full": dict(gallery_size=3000, n_queries=1000, n_captions=10000),
         "tiny": dict(gallery_size=48, n_queries=16, n_captions=48)}
# The text tower's name for the image tower's output projection.
TEXT_NAMES = {"visual_projection": "text_projection"}


def ensure_world(path: Path, seed: int, style: str, **sizes) -> Path:
    """The shapes world at `path`, generated unless it already holds exactly this world."""
    if not holds_world(path, seed=seed, style=style, **sizes):
        generate_world(path, seed=seed, style=style, **sizes)
    return path


def text_targets(model: torch.nn.Module, targets) -> list[str]:
    """Text-tower Linear modules whose leaf name is one of `targets` (image names mapped to text ones)."""
    leaves = {TEXT_NAMES.get(t, t) for t in targets}
    prefixes = text_prefixes(model)
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
            and in_tower(n, prefixes) and n.rpartition(".")[2] in leaves]


def prepare(model: torch.nn.Module, variant: Variant, targets, args) -> torch.nn.Module:
    """Make the variant's parameters trainable (LoRA wrapping or plain requires_grad); returns the model."""
    names = select_targets(model, targets) if variant.vision == "lora" else []
    names += text_targets(model, targets) if variant.text == "lora" else []
    if names:
        regex = target_regex(names, [n for n, _ in model.named_modules()])
        model = get_peft_model(model, LoraConfig(r=args.lora_rank, lora_alpha=args.lora_alpha,
                                                 lora_dropout=args.lora_dropout, target_modules=regex, bias="none"))
    else:
        for p in model.parameters():
            p.requires_grad_(False)
    if variant.vision == "full":
        prefixes = vision_prefixes(model)
        for n, p in model.named_parameters():
            p.requires_grad_(in_tower(n, prefixes))
    return model


def load_train_set(encoder, source, plan: Plan) -> dict:
    """Every training pair's pixels, caption, labels metadata and frozen-text embedding, in plan.train order."""
    chunks = Chunks(plan.train, 256)
    batches = list(make_loader(PairBatches(source, encoder.preprocess, chunks), range(len(chunks)), 0))
    captions = [c for b in batches for c in b["captions"]]
    return {"pixels": torch.cat([b["pixels"] for b in batches]), "captions": captions,
            "meta": [m for b in batches for m in b["meta"]], "text": torch.from_numpy(encoder.encode_texts(captions)),
            "position": {int(i): k for k, i in enumerate(plan.train)}}


def _text_features(encoder, data: dict, rows: list[int], variant: Variant) -> torch.Tensor:
    if variant.text == "frozen":
        return data["text"][rows]
    tokens = encoder.tokenize([data["captions"][r] for r in rows])
    tokens.pop("token_type_ids", None)
    return l2_normalize(encoder.text_features(tokens).float())


def train_variant(encoder, data: dict, plan: Plan, variant: Variant, args, mode: str) -> dict:
    """Train one variant in place on encoder.model; returns its training counters."""
    seed_everything(args.seed)
    model = prepare(encoder.model, variant, args.lora_targets or encoder.family.lora_targets, args)
    params = [p for p in model.parameters() if p.requires_grad]
    lr = args.full_lr if variant.vision == "full" else args.lr
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    warmup = default_warmup(args.steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, warmup, args.steps))
    set_lora_train_mode(model)
    t0, losses = time.perf_counter(), []
    for step in range(args.steps):
        rows = [data["position"][int(i)] for i in plan.global_batch(step)]
        image = l2_normalize(encoder.image_features(data["pixels"][rows]).float())
        text = _text_features(encoder, data, rows, variant)
        labels = positives_matrix([data["captions"][r] for r in rows], [data["meta"][r] for r in rows], mode)
        loss = contrastive_loss(image, text, labels, 1.0 / args.temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    model.eval()
    return {"trainable": sum(p.numel() for p in params), "lr": lr, "seconds": round(time.perf_counter() - t0, 1),
            "final_loss": round(float(np.mean(losses[-20:])), 4)}


def _best(results: dict, groups: dict, metric: str) -> dict:
    keys = [k for k in results if k.startswith("slerp@")]
    best = max(keys, key=lambda k: results[k][metric])
    return {"alpha": float(best.split("@")[1]), "all": round(results[best][metric], 2),
            **{g: round(m[best][metric], 2) for g, m in groups.items()}}


def score(encoder, worlds: dict, source, plan: Plan) -> dict:
    """Best-alpha CIRR R@1 and CIRCO mAP@10 on the textured eval world, plain CIRR R@1, paired cosine."""
    fusions = [("slerp", a) for a in ALPHAS]
    out = {"paired_cosine": measure_gap(encoder, source, plan.holdout, 256, 0).get("paired_cosine")}
    for key, world, bench, metric in (("cirr_r1", "eval", "cirr", "R@1"), ("circo_map10", "eval", "circo", "mAP@10"),
                                      ("plain_cirr_r1", "plain", "cirr", "R@1")):
        res = cir.benchmarks.evaluate(encoder, bench, worlds[world] / bench, fusions=fusions, batch_size=256,
                                      workers=0, progress=False)
        out[key] = _best(res["results"], res.get("groups") or {}, metric)
    return out


def build_parser() -> argparse.ArgumentParser:
    """The arguments of the benchmark."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("/tmp/cir-tat-ablations"), help="worlds are kept here")
    p.add_argument("--model", default="toy", help="base model (default toy)")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {', '.join(VARIANTS)}")
    p.add_argument("--train-seed", type=int, default=1, help="training world seed (default 1)")
    p.add_argument("--eval-seed", type=int, default=2, help="evaluation world seed (default 2)")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3, help="LoRA learning rate (default 1e-3)")
    p.add_argument("--full-lr", type=float, default=1e-4, help="learning rate of full_vision (default 1e-4)")
    p.add_argument("--lora-rank", type=int, default=TrainConfig.lora_rank)
    p.add_argument("--lora-alpha", type=float, default=TrainConfig.lora_alpha)
    p.add_argument("--lora-dropout", type=float, default=TrainConfig.lora_dropout)
    p.add_argument("--lora-targets", type=lambda s: tuple(s.split(",")), default=None,
                   help="image-tower LoRA targets (default: the model family's, as cir train); the text tower's "
                        "LoRA uses the same names")
    p.add_argument("--temperature", type=float, default=PAPER_TEMPERATURE)
    p.add_argument("--positives", choices=POSITIVES, default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--tiny", action="store_true", help="tiny worlds (a smoke test; use with a tiny --model)")
    p.add_argument("--out", type=Path, help="also write the results as JSON here")
    return p


def table(rows: dict) -> str:
    """The results as one markdown table."""
    lines = ["| variant | trainable | paired cos | CIRR R@1 (alpha) | seen | held-out | CIRCO mAP@10 (alpha) "
             "| seen | held-out | plain CIRR R@1 | train s |", "|" + "---|" * 11]
    for name, r in rows.items():
        c, m, p = r["cirr_r1"], r["circo_map10"], r["plain_cirr_r1"]
        t = r.get("training", {})
        lines.append(f"| {name} | {t.get('trainable', 0):,} | {r['paired_cosine']:.3f} | {c['all']:.1f} ({c['alpha']}) "
                     f"| {c.get('seen', 0):.1f} | {c.get('heldout', 0):.1f} | {m['all']:.1f} ({m['alpha']}) "
                     f"| {m.get('seen', 0):.1f} | {m.get('heldout', 0):.1f} | {p['all']:.1f} | {t.get('seconds', '')} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    if unknown := [n for n in names if n not in VARIANTS]:
        print(f"unknown variants: {', '.join(unknown)}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tiny:
        args.steps, args.batch_size = min(args.steps, 2), min(args.batch_size, 16)
    sizes = SIZES["tiny" if args.tiny else "full"]
    work = args.work.expanduser()
    worlds = {"train": ensure_world(work / f"train_textured_{args.train_seed}", args.train_seed, "textured", **sizes),
              "eval": ensure_world(work / f"eval_textured_{args.eval_seed}", args.eval_seed, "textured",
                                   **{**sizes, "n_captions": 0}),
              "plain": ensure_world(work / f"eval_plain_{args.eval_seed}", args.eval_seed, "plain",
                                    **{**sizes, "n_captions": 0})}
    source = open_pairs(worlds["train"] / "captions.jsonl")
    plan = Plan(len(source), auto_holdout(len(source)), args.batch_size, args.seed)
    mode = resolve_positives(args.positives, source.structured)
    encoder = load_encoder(args.model, device="cpu")
    data = load_train_set(encoder, source, plan)
    rows = {"base": score(encoder, worlds, source, plan)}
    print(f"base: {json.dumps(rows['base'])}", flush=True)
    for name in names:
        encoder = load_encoder(args.model, device="cpu")  # a fresh base model for each variant
        training = train_variant(encoder, data, plan, VARIANTS[name], args, mode)
        rows[name] = {**score(encoder, worlds, source, plan), "training": training}
        print(f"{name}: {json.dumps(rows[name])}", flush=True)
    print(table(rows), end="")
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
