"""`cir train` / `python -m training`: Text-Anchored Tuning of a dual encoder's image tower."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

# Light imports only: the parser is built, and --help answered, before torch loads (see main).
from cir.defaults import DEFAULT_ALPHA
from cir.families import default_targets_help
from training.config import POSITIVES, TrainConfig

DESCRIPTION = """\
Text-Anchored Tuning (TAT, arXiv 2405.00571): train a LoRA adapter on the IMAGE tower of a
CLIP-family model with a symmetric contrastive loss against the frozen TEXT tower, so image
embeddings move toward the text embeddings (the modality gap shrinks) and Slerp queries mix
the two better. The text tower is not changed at all.

DATA is a JSONL or CSV/TSV file with `image` (path relative to the file) and `caption` fields
(a shapes world's captions.jsonl works as is), or a folder of WebDataset .tar shards (or one
.tar) whose samples are <key>.jpg/.png + <key>.txt. Only byte offsets are held in memory.

OUT receives the adapter (adapter_config.json + adapter_model.safetensors + cir_adapter.json,
usable as `load_encoder(model, adapter=OUT)` and by `cir index/serve --adapter`), or with
--merge the merged full model; train_log.jsonl; report.json (modality gap on held-out pairs
before/after and, with --eval-cir, Slerp Recall@K before/after); checkpoints/; run.json.

Before the model loads, a sample of the images is decoded: the run stops when none loads and
warns when more than 10% fail; `cir train --check --data PATH` decodes every row and reports.

--triplets FILE trains a supervised CIR model instead (docs/supervised.md): LoRA on the image tower
(text tower frozen unless --text-lora), the Slerp of reference and text contrasted with the target
images, in-batch negatives and optional --hard-negatives from an index; --init-adapter starts from a
TAT run. The output is an adapter like any other. The JSONL form is one object per line:
{"reference": "a.jpg" or ["a.jpg", "b.jpg"] or gallery ids, "text": "make it red", "target": "c.jpg"}.

Exit status: 0 done, 2 bad input, 130/143 stopped by SIGINT/SIGTERM after a checkpoint
(run again with --resume to continue). Under torchrun the global batch is split across ranks."""

EXAMPLES = """\
examples:
  cir toyworld --out /tmp/world --seed 1 && cir toyworld --out /tmp/eval --seed 2
  cir train --check --data /tmp/world/captions.jsonl     # do the images resolve and decode?
  cir train --model toy --data /tmp/world/captions.jsonl --out /tmp/tat --lr 1e-3 \\
      --eval-cir /tmp/eval/cirr --eval-alpha 0.5,0.7    # small sets: lr 1e-3 (docs/tat.md)
  cir toyworld --out /tmp/world --seed 1 --train-triplets 1000   # + cirr/captions/cap.rc2.train.json
  cir train --model toy --triplets /tmp/world/cirr/captions/cap.rc2.train.json --init-adapter /tmp/tat \\
      --out /tmp/sup --lr 1e-3 --max-steps 200 --batch-size 64 --eval-cir /tmp/eval/cirr
  torchrun --nproc-per-node 8 -m training --model openai/clip-vit-large-patch14 \\
      --data /data/laion-2m/ --out runs/tat-l14 --batch-size 1024 --resume"""


def _temperature(value: str) -> float | None:
    if value == "model":
        return None
    try:
        t = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'model', got {value!r}") from None
    if not t > 0:
        raise argparse.ArgumentTypeError(f"temperature must be > 0, got {value}")
    return t


def _names(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _alphas(value: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {value!r}") from None


D = TrainConfig  # field defaults of the one config: the CLI never restates them


def _csv(values) -> str:
    return ",".join(map(str, values))


def _add_io(p: argparse.ArgumentParser) -> None:
    io = p.add_argument_group("inputs and outputs")
    io.add_argument("--model", metavar="NAME_OR_PATH",
                    help="base model: 'toy', a local model folder or a hub id (CLIP, SigLIP, SigLIP 2 or BLIP); required")
    io.add_argument("--data", metavar="PATH", help="TAT: JSONL/CSV/TSV of image,caption or a WebDataset folder")
    io.add_argument("--triplets", metavar="FILE",
                    help="supervised CIR instead of TAT: CIRR captions (cap.rc2.train.json), FashionIQ captions "
                         "(cap.<category>.train.json; a captions/ folder: all its cap.*.train.json) or a JSONL of "
                         "{reference, text, target} (see below)")
    io.add_argument("--out", metavar="DIR", help="output folder (must be empty, or this run with --resume); required")
    io.add_argument("--check", action="store_true",
                    help="only check the data: count rows whose image resolves and decodes, list why the others "
                         "do not, exit 0 (some load) or 2 (none loads); needs neither --model nor --out")
    io.add_argument("--image-key", default=D.image_key, help="image path field of JSONL/CSV rows (default %(default)s)")
    io.add_argument("--caption-key", default=D.caption_key,
                    help="caption field of JSONL/CSV rows (default %(default)s)")
    io.add_argument("--merge", action="store_true", help="save the merged full model instead of the adapter")
    io.add_argument("--holdout", type=int, default=D.holdout, metavar="N",
                    help="pairs kept out of training to measure the modality gap (default 10%% of the data, "
                         "at most 1000; the same pairs for every seed)")


def _add_optimisation(p: argparse.ArgumentParser) -> None:
    opt = p.add_argument_group("optimisation")
    opt.add_argument("--batch-size", type=int, default=D.batch_size, metavar="N",
                     help="global contrastive batch, split across ranks (default %(default)s; the paper: 1024)")
    opt.add_argument("--grad-accum", type=int, default=D.grad_accum, metavar="K",
                     help="micro-batches per optimiser step (each is its own contrastive batch; default %(default)s)")
    opt.add_argument("--lr", type=float, default=D.lr, help="peak AdamW learning rate (default %(default)s)")
    opt.add_argument("--weight-decay", type=float, default=D.weight_decay,
                     help="AdamW weight decay (default %(default)s)")
    opt.add_argument("--warmup-steps", type=int, default=D.warmup_steps, metavar="N",
                     help="linear warmup steps before the cosine decay (default 5%% of the steps)")
    opt.add_argument("--epochs", type=int, default=D.epochs,
                     help="passes over the training pairs (default %(default)s, as the paper)")
    opt.add_argument("--max-steps", type=int, default=D.max_steps, metavar="N",
                     help="train exactly N optimiser steps instead, cycling through the data as needed")
    opt.add_argument("--temperature", type=_temperature, default=D.temperature, metavar="TAU|model",
                     help=f"fixed softmax temperature (default {D.temperature}, logit scale "
                          f"{1 / D.temperature:.1f}, as the paper) or 'model' for the base model's learned scale")
    opt.add_argument("--positives", choices=POSITIVES, default=D.positives,
                     help="contrastive labels: 'pairs' one-to-one (CLIP, the paper); 'captions' identical caption "
                          "strings are positives; 'mentions' a caption is positive for every image it describes "
                          "(shapes-world rows with mentions/attributes); 'auto' (default) = mentions when the rows "
                          "carry them, else captions")
    opt.add_argument("--seed", type=int, default=D.seed,
                     help="seed of LoRA init, data order and dropout (default %(default)s)")


def _add_lora_and_eval(p: argparse.ArgumentParser) -> None:
    lora = p.add_argument_group("LoRA (image tower only)")
    lora.add_argument("--lora-rank", type=int, default=D.lora_rank, help="LoRA rank (default %(default)s)")
    lora.add_argument("--lora-alpha", type=float, default=D.lora_alpha, help="LoRA alpha (default %(default)s)")
    lora.add_argument("--lora-dropout", type=float, default=D.lora_dropout, help="LoRA dropout (default %(default)s)")
    lora.add_argument("--lora-targets", type=_names, default=D.lora_targets, metavar="NAMES",
                      help="comma-separated module names or regexes, matched inside the image tower only "
                           f"(default: the model family's attention projections: {default_targets_help()}; "
                           "e.g. add fc1,fc2,visual_projection)")
    ev = p.add_argument_group("evaluation")
    ev.add_argument("--eval-cir", metavar="DIR", help="CIRR-layout set (e.g. a shapes world's cirr/): Slerp Recall@K "
                                                       "before and after, split seen/held-out for shapes worlds")
    ev.add_argument("--eval-alpha", type=_alphas, default=D.eval_alpha, metavar="A[,A...]",
                    help=f"Slerp text weight(s) for --eval-cir (default {_csv(D.eval_alpha)})")
    ev.add_argument("--eval-split", default=D.eval_split, help="split of --eval-cir (default %(default)s)")
    ev.add_argument("--eval-batch-size", type=int, default=D.eval_batch_size, metavar="N",
                    help="embedding batch for measurements (default %(default)s)")


def _add_running(p: argparse.ArgumentParser) -> None:
    run = p.add_argument_group("running")
    run.add_argument("--resume", action="store_true",
                     help="continue the run in --out from its last checkpoint (starts it when --out is empty)")
    run.add_argument("--checkpoint-every", type=int, default=D.checkpoint_every, metavar="N",
                     help="checkpoint every N steps (0: only on SIGINT/SIGTERM; default %(default)s)")
    run.add_argument("--keep-checkpoints", type=int, default=D.keep_checkpoints, metavar="N",
                     help="checkpoints kept (default %(default)s)")
    run.add_argument("--device", default=D.device, help="auto (CUDA if present), cpu, cuda or cuda:N")
    run.add_argument("--dtype", default=D.dtype,
                     help="autocast dtype: auto (bf16 on GPU, fp32 on CPU), float32, bfloat16")
    run.add_argument("--workers", type=int, default=D.workers,
                     help="DataLoader worker processes decoding images (default %(default)s)")
    run.add_argument("--threads", type=int, default=D.threads, metavar="N",
                     help="CPU threads for torch (default: torch's choice; CPU results are reproducible for a "
                          "fixed thread count)")
    run.add_argument("--log-every", type=int, default=D.log_every, metavar="N",
                     help="train_log.jsonl line every N steps (default %(default)s)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")


def _add_supervised(p: argparse.ArgumentParser) -> None:
    sup = p.add_argument_group("supervised CIR (--triplets; docs/supervised.md)")
    sup.add_argument("--init-adapter", metavar="DIR",
                     help="start from this adapter's LoRA weights (a TAT run's OUT); its rank, alpha and targets "
                          "replace --lora-*")
    sup.add_argument("--alpha", type=float, default=D.alpha, metavar="A",
                     help="Slerp text weight of the composed queries (default: the --hard-negatives or --gallery "
                          f"index's default alpha, else {DEFAULT_ALPHA})")
    sup.add_argument("--text-lora", action="store_true",
                     help="LoRA on the text tower too (an ablation: by default the text tower stays frozen)")
    sup.add_argument("--hard-negatives", metavar="INDEX_ROOT",
                     help="mine hard negatives once, at the start, from this index: the top results of each "
                          "triplet's query that are neither its target nor a reference")
    sup.add_argument("--hard-negatives-per-query", type=int, default=D.hard_negatives_per_query, metavar="N",
                     help="hard negatives per triplet (default %(default)s)")
    sup.add_argument("--gallery", metavar="INDEX_ROOT",
                     help="index whose item ids the JSONL's references and targets may name (as `cir feedback "
                          "export` writes them)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `cir train`."""
    p = argparse.ArgumentParser(prog="cir train", description=DESCRIPTION, epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    for add in (_add_io, _add_optimisation, _add_lora_and_eval, _add_supervised, _add_running):
        add(p)
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Build the validated TrainConfig from parsed arguments."""
    return TrainConfig(
        model=args.model, data=args.triplets or args.data, out=args.out, batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        lr=args.lr, weight_decay=args.weight_decay, warmup_steps=args.warmup_steps, epochs=args.epochs,
        max_steps=args.max_steps, lora_rank=args.lora_rank, lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout, lora_targets=args.lora_targets, temperature=args.temperature,
        positives=args.positives, seed=args.seed, holdout=args.holdout, image_key=args.image_key,
        caption_key=args.caption_key, merge=args.merge, resume=args.resume,
        checkpoint_every=args.checkpoint_every, keep_checkpoints=args.keep_checkpoints, eval_cir=args.eval_cir,
        eval_alpha=args.eval_alpha, eval_split=args.eval_split, eval_batch_size=args.eval_batch_size,
        device=args.device, dtype=args.dtype, workers=args.workers, threads=args.threads, log_every=args.log_every,
        progress=not args.no_progress, objective="triplets" if args.triplets else "tat", alpha=args.alpha,
        init_adapter=args.init_adapter, text_lora=args.text_lora, hard_negatives=args.hard_negatives,
        hard_negatives_per_query=args.hard_negatives_per_query, gallery=args.gallery)


def _check(args: argparse.Namespace) -> int:
    # Heavy (torch via the DataLoader): imported only once the arguments are known to be good.
    from training.check import check_rows  # noqa: PLC0415
    from training.job import open_data  # noqa: PLC0415

    source = open_data(args.triplets or args.data, "triplets" if args.triplets else "tat", args.gallery,
                       args.image_key, args.caption_key)
    result = check_rows(source, range(len(source)), args.workers, progress=not args.no_progress)
    print(f"cir train --check: {source.path}")
    for line in result.lines():
        print("  " + line)
    if result.decoded == 0:
        print("cir train: error: no image of the data loads (see above)", file=sys.stderr)
        return 2
    return 0


def _train(args: argparse.Namespace) -> int:
    # Heavy (torch, transformers, peft): imported only once the arguments are known to be good.
    from cir.models import ModelLoadError  # noqa: PLC0415
    from training.loop import train  # noqa: PLC0415
    from training.report import summary_lines  # noqa: PLC0415

    try:
        result = train(config_from_args(args))
    except ModelLoadError as exc:
        return _error(exc)
    if result.status == "interrupted":
        print(f"cir train: stopped at step {result.step} with a checkpoint in {result.out}; "
              "run the same command with --resume to continue", file=sys.stderr)
        return 128 + (result.signal or signal.SIGTERM)
    print(f"cir train: done, {result.step} steps; {'model' if args.merge else 'adapter'} in {result.out}")
    for line in summary_lines(result.report or {}):
        print("  " + line)
    for warning in (result.report or {}).get("warnings", []):
        print(f"cir train: warning: {warning}", file=sys.stderr)
    return 0


def _error(exc: Exception) -> int:
    print(f"cir train: error: {exc}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """Run `cir train`; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        missing = [] if args.check else [f"--{n}" for n in ("model", "out") if not getattr(args, n)]
        if bool(args.data) == bool(args.triplets):
            parser.error("give --data (TAT on image-caption pairs) or --triplets (supervised CIR), not both"
                         if args.data else "the following arguments are required: --data or --triplets")
        if missing:
            parser.error(f"the following arguments are required: {', '.join(missing)}")
    except SystemExit as exc:  # --help, or a usage error already explained on stderr
        return int(exc.code or 0)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return _check(args) if args.check else _train(args)
    except (ValueError, OSError) as exc:
        return _error(exc)
    except KeyboardInterrupt:  # a second Ctrl-C: stopped without a new checkpoint
        print("cir train: interrupted; --resume continues from the last checkpoint", file=sys.stderr)
        return 130
