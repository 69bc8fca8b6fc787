"""TAT throughput: images/s of the full `cir train` pipeline against the compute-only step rate.

    python perf/tat_speed.py --arch b16 --pairs 4096 --batch-size 256 --steps 30 --workers 12

Builds a randomly initialised CLIP of ViT-B size (no downloads; the speed of a step does not
depend on the weights) and synthetic JPEG + caption WebDataset shards, then prints:
- compute-only images/s (pixels already on the device: forward, loss, backward, AdamW),
- pipeline images/s of `cir train` (decode + preprocess in workers, the same step),
- their ratio (below ~0.9 the data pipeline, not the GPU, is the bottleneck),
- the share of the physical limit (docs/method.md section 6: image-tower GFLOPs x ~2 for forward + input grads).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, PreTrainedTokenizerFast

from cir.encoder import load_encoder
from training import cli
from training.lora import add_lora, set_lora_train_mode
from training.loop import micro_loss
from training.distributed import DistInfo

ARCHS = {  # width, layers, patch, image GFLOPs per 224 px image (docs/method.md, section 6)
    "b32": (768, 12, 32, 8.8),
    "b16": (768, 12, 16, 35.0),
    "l14": (1024, 24, 14, 162.0),
    "tiny": (128, 2, 32, 0.2),  # a smoke test of this script on CPU
}
WORDS = ("a photo of red blue green big small circle square dog cat on the left right top bottom "
         "with stripes and two three house car tree sky").split()
# Dense bf16 peak TFLOP/s by device name, most specific first (H100 = SXM); others report achieved TFLOP/s only.
PEAK_TFLOPS = {"H100 PCIe": 756.0, "H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0}


def peak_tflops(device: str) -> float | None:
    """The device's dense bf16 peak, if it is in PEAK_TFLOPS."""
    return next((v for k, v in PEAK_TFLOPS.items() if k in device), None)


def make_model(out: Path, arch: str) -> Path:
    """Save a random CLIP with a word-level tokenizer to `out`."""
    width, layers, patch, _ = ARCHS[arch]
    vocab = {t: i for i, t in enumerate(["<pad>", "<unk>", "<bos>", "<eos>"] + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A <eos>",
                                                       special_tokens=[("<bos>", 2), ("<eos>", 3)])
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<bos>",
                            eos_token="<eos>", model_max_length=77).save_pretrained(out)
    small = arch == "tiny"
    text = dict(vocab_size=len(vocab), hidden_size=128 if small else 512, intermediate_size=512 if small else 2048,
                num_hidden_layers=2 if small else 12, num_attention_heads=8, max_position_embeddings=77,
                pad_token_id=0, bos_token_id=2, eos_token_id=3)
    vision = dict(hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers,
                  num_attention_heads=width // 64, image_size=224, patch_size=patch)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=512)).save_pretrained(out)
    CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}).save_pretrained(out)
    return out


def make_shards(out: Path, pairs: int, per_shard: int = 512) -> Path:
    """Synthetic 256x256 JPEGs with random captions as WebDataset shards."""
    rng = np.random.default_rng(0)
    out.mkdir(parents=True, exist_ok=True)
    base = rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)
    for s in range(0, pairs, per_shard):
        with tarfile.open(out / f"{s // per_shard:05d}.tar", "w") as tf:
            for k in range(s, min(s + per_shard, pairs)):
                buf = io.BytesIO()
                Image.fromarray(np.roll(base, k, axis=1)).save(buf, format="JPEG", quality=90)
                cap = " ".join(rng.choice(WORDS, size=8)).encode()
                for name, data in ((f"{k:08d}.jpg", buf.getvalue()), (f"{k:08d}.txt", cap)):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
    return out


def compute_only(model_dir: Path, batch: int, steps: int) -> float:
    """Images/s of the training step alone, on pixels already on the device."""
    encoder = load_encoder(str(model_dir))
    model = add_lora(encoder.model, 16, 16.0, 0.1, encoder.family.lora_targets)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    set_lora_train_mode(model)
    pixels = torch.randn(batch, 3, 224, 224, device=encoder.device)
    captions = [" ".join(np.random.default_rng(i).choice(WORDS, size=8)) for i in range(batch)]
    fake = {"pixels": pixels, "captions": captions, "meta": [None] * batch}
    for i in range(steps + 3):
        if i == 3:
            if encoder.device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        micro_loss(encoder, fake, "captions", 1 / 0.07, DistInfo(), batch).backward()
        opt.step()
    if encoder.device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def pipeline(model_dir: Path, data: Path, out: Path, batch: int, steps: int, workers: int) -> float:
    """Steady-state images/s of `cir train` (the first logged window, with start-up, is dropped)."""
    code = cli.main(["--model", str(model_dir), "--data", str(data), "--out", str(out), "--batch-size", str(batch),
                     "--max-steps", str(steps), "--workers", str(workers), "--log-every", "5", "--no-progress",
                     "--holdout", "64", "--checkpoint-every", "0"])
    if code != 0:
        raise SystemExit(f"cir train failed with {code}")
    rows = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    steady = rows[1:] or rows
    return float(np.mean([r["images_per_s"] for r in steady]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", choices=ARCHS, default="b16")
    p.add_argument("--pairs", type=int, default=4096)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--workers", type=int, default=12)
    p.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    args = p.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="tatbench-"))
    t0 = time.perf_counter()
    model_dir = make_model(work / "model", args.arch)
    data = make_shards(work / "shards", args.pairs)
    print(f"setup {time.perf_counter() - t0:.1f} s ({args.arch}, {args.pairs} pairs)")
    compute = compute_only(model_dir, args.batch_size, args.steps)
    piped = pipeline(model_dir, data, work / "run", args.batch_size, args.steps, args.workers)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"device: {device}; batch {args.batch_size}; {args.workers} workers")
    print(f"compute-only: {compute:.0f} images/s")
    print(f"cir train:    {piped:.0f} images/s (pipeline/compute ratio {piped / compute:.2f})")
    peak = peak_tflops(device)
    if peak:
        bound = peak * 1e12 / (2 * ARCHS[args.arch][3] * 1e9)
        print(f"physical bound ~{bound:.0f} images/s (image tower fwd + input grads only): "
              f"compute-only reaches {compute / bound:.2f} of it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
