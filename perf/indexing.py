"""Indexer throughput next to its two stages measured in the same run: bare decode and bare encode.

    nice -n 10 python perf/indexing.py                        # the toy model, small CPU defaults
    python perf/indexing.py --synthetic-vitb32 --images 20000 --batch-size 256 --workers 14   # GPU host

Reports images/s of (1) decode+preprocess alone in the DataLoader workers, (2) the encoder's
forward alone on ready batches (autocast bf16 on GPU), (3) the indexer's embedding stage doing
both, overlapped, and the ratio of (3) to the slower of (1) and (2) (goal >= 0.8).
`--synthetic-vitb32` builds a random CLIP with ViT-B/32's image tower (12x768, patch 32, 224 px;
a small text tower, which the indexer never runs) so no weights are downloaded.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path


import numpy as np
import torch
from PIL import Image, ImageDraw
from tokenizers import Tokenizer, models, pre_tokenizers
from torch.utils.data import DataLoader
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, PreTrainedTokenizerFast

from cir.encoder import load_encoder
from cir.pipeline import ImageFileDataset, collate_images, make_batches
from cir.pixels import map_pixels
from indexer.build import build
from indexer.config import BuildConfig


def random_clip(out: Path, vitb32: bool) -> Path:
    """Save a random CLIP (ViT-B/32-sized image tower, or a small one) with tokenizer and processor."""
    torch.manual_seed(0)
    vision = (dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                   image_size=224, patch_size=32) if vitb32 else
              dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                   image_size=64, patch_size=16))
    text = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                vocab_size=8, max_position_embeddings=16, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=512 if vitb32 else 64)).save_pretrained(out)
    vocab = {t: i for i, t in enumerate(["[PAD]", "[BOS]", "[EOS]", "[UNK]", "a", "b", "c", "d"])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]",
                            eos_token="[EOS]", model_max_length=16).save_pretrained(out)
    size = vision["image_size"]
    CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}).save_pretrained(out)
    return out


def make_gallery(folder: Path, count: int, size: tuple[int, int], distinct: int = 64) -> None:
    """`count` JPEGs (photo-like sizes, `distinct` different contents copied around)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    blobs = []
    for i in range(min(distinct, count)):
        im = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 255, 3)))
        draw = ImageDraw.Draw(im)
        for _ in range(12):
            x0, y0 = int(rng.integers(0, size[0])), int(rng.integers(0, size[1]))
            draw.ellipse([x0, y0, x0 + int(rng.integers(10, size[0] // 2)), y0 + int(rng.integers(10, size[1] // 2))],
                         fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        noise = rng.integers(-12, 12, (size[1], size[0], 3))
        im = Image.fromarray(np.clip(np.asarray(im, dtype=np.int16) + noise, 0, 255).astype(np.uint8))
        path = folder / f"src{i:03d}.jpg"
        im.save(path, quality=90)
        blobs.append(path.read_bytes())
    for i in range(len(blobs), count):
        (folder / f"img{i:07d}.jpg").write_bytes(blobs[i % len(blobs)])


def decode_rate(paths: list[Path], encoder, batch_size: int, workers: int) -> float:
    """Images/s of reading + decoding + preprocessing alone, in the DataLoader workers."""
    loader = DataLoader(ImageFileDataset(paths, encoder.preprocess, hash_files=True),
                        batch_sampler=make_batches(len(paths), batch_size), num_workers=workers,
                        collate_fn=collate_images, prefetch_factor=4 if workers else None)
    start = time.perf_counter()
    count = sum(len(batch["indices"]) for batch in loader)
    return count / (time.perf_counter() - start)


def encode_rate(encoder, batch_size: int, images: int) -> float:
    """Images/s of the encoder's forward alone on a ready, pinned batch (host-to-device copy included)."""
    noise = np.random.default_rng(0).integers(0, 255, (360, 480, 3), dtype=np.uint8)
    pixels = encoder.preprocess.batch([Image.fromarray(noise)] * batch_size)
    if encoder.device.type == "cuda":
        pixels = map_pixels(torch.Tensor.pin_memory, pixels)
    for _ in range(3):
        encoder.encode_pixels(pixels)  # warm-up (kernels, autotuning)
    steps = max(1, images // batch_size)
    start = time.perf_counter()
    for _ in range(steps):
        encoder.encode_pixels(pixels)  # returns numpy: synchronises every batch like the indexer
    return steps * batch_size / (time.perf_counter() - start)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="toy", help="model to measure (default: the built-in toy model)")
    p.add_argument("--synthetic-vitb32", action="store_true", help="a random ViT-B/32-sized CLIP built here")
    p.add_argument("--images", type=int, default=768, help="gallery size (default 768)")
    p.add_argument("--image-size", default="480x360", help="WxH of the generated JPEGs (default 480x360)")
    p.add_argument("--batch-size", type=int, default=32, help="encoder batch (default 32)")
    p.add_argument("--workers", type=int, default=2, help="decode workers (default 2)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--dtype", default="auto", help="autocast dtype (auto = bf16 on GPU)")
    p.add_argument("--threads", type=int, default=1, help="torch threads in this process on CPU (default 1)")
    p.add_argument("--json", action="store_true", help="print one final JSON line")
    return p.parse_args(argv)


def measure(args) -> dict:
    """The three rates on one generated gallery (args as parse_args gives them) and their ratio."""
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="cir-bench-indexer-"))
    try:
        model = str(random_clip(work / "model", True)) if args.synthetic_vitb32 else args.model
        encoder = load_encoder(model, device=args.device, dtype=args.dtype)
        size = tuple(int(v) for v in args.image_size.split("x"))
        make_gallery(work / "gallery", args.images, size)
        paths = sorted((work / "gallery").glob("*.jpg"))
        decode = decode_rate(paths, encoder, args.batch_size, args.workers)
        encode = encode_rate(encoder, args.batch_size, args.images)
        cfg = BuildConfig(gallery=work / "gallery", model=model, out=work / "root", batch_size=args.batch_size,
                          workers=args.workers, device=args.device, dtype=args.dtype, factory="Flat", progress=False,
                          shard_size=max(args.images // 4, args.batch_size))
        result = build(cfg, encoder=encoder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    slower = min(decode, encode)
    return {"model": "synthetic-vitb32" if args.synthetic_vitb32 else args.model, "device": str(encoder.device),
            "dtype": str(encoder.autocast_dtype or "float32"), "images": args.images, "image_size": args.image_size,
            "batch_size": args.batch_size, "workers": args.workers, "decode_images_per_s": round(decode, 1),
            "encode_images_per_s": round(encode, 1), "indexer_images_per_s": result.images_per_s,
            "ratio_to_slower_stage": round(result.images_per_s / slower, 3),
            "slower_stage": "decode" if decode < encode else "encode", "end_to_end_seconds": result.seconds}


def main(argv: list[str] | None = None) -> int:
    """Measure the three rates on one generated gallery and print the summary."""
    args = parse_args(argv)
    summary = measure(args)
    decode, encode = summary["decode_images_per_s"], summary["encode_images_per_s"]
    print(f"{summary['model']} on {summary['device']} ({summary['dtype']}), {args.images} images {args.image_size}, "
          f"batch {args.batch_size}, {args.workers} workers:\n"
          f"  decode+preprocess alone {decode:9.1f} images/s\n  encoder forward alone   {encode:9.1f} images/s\n"
          f"  indexer (overlapped)    {summary['indexer_images_per_s']:9.1f} images/s\n"
          f"  ratio to the slower stage ({summary['slower_stage']}): "
          f"{summary['ratio_to_slower_stage']:.2f} (goal >= 0.8)")
    if args.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
