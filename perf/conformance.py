"""Real-size conformance: each supported backbone at its published size, random weights, on the CPU.

    make conformance        # = flock /tmp/cir-bench.lock python perf/conformance.py --json runs/conformance.json
    python perf/conformance.py --models clip-vit-b32,blip-itm-base-coco

For every architecture in perf/archs.py, in its own process: save it with random weights; load
it with `load_encoder` (family, class, the missing-weights check); preprocess 4 images of
different sizes (the image size, crop or NaFlex patch grid) and an over-long text (the token
limit); encode 4 images and 4 texts; index 16 generated JPEGs with the indexer and search them
(an image-only query must find its own image first); run one TAT step (LoRA on the family's
default targets, the training loop's loss, AdamW) and check that only image-tower LoRA weights
got gradients and the text embeddings did not move. Prints one row per architecture. Weights
are random and the tokenizers are stand-ins (perf/archs.py): this checks shapes, limits and
the code paths at full size, not retrieval quality.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from archs import ARCHS, save_random
from indexing import make_gallery
from isolate import run_part, write_result
from PIL import Image

from cir.encoder import load_encoder
from cir.index_store import load_version
from cir.pixels import pixels_len
from cir.search.engine import IndexState, Query, SearchEngine
from indexer.build import build
from indexer.config import BuildConfig
from training.distributed import DistInfo
from training.lora import add_lora, check_trainable, set_lora_train_mode
from training.loop import micro_loss

SIZES = [(640, 480), (300, 500), (1024, 768), (50, 50)]
TEXTS = ["a photo of a red circle", "make it blue", "two dogs on the left", "the same but with stripes"]


class ConformanceError(AssertionError):
    """A check of the real-size architecture failed."""


def expect(ok: bool, message: str) -> None:
    if not ok:
        raise ConformanceError(message)


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for w, h in SIZES]


def check_inputs(encoder, arch) -> tuple[str, int]:
    """Preprocessing at the published input size, and the text tower's token limit."""
    pixels = encoder.preprocess.batch(_images())
    if isinstance(pixels, dict):  # NaFlex: each image resized to at most max_num_patches patches
        most, patch = arch.processor["max_num_patches"], arch.processor["patch_size"]
        expect(tuple(pixels["pixel_values"].shape) == (4, most, 3 * patch * patch), "NaFlex patch tensor shape")
        expect(bool((pixels["spatial_shapes"].prod(1) <= most).all()), "NaFlex patch grid over the limit")
        expect(pixels["pixel_attention_mask"].sum(1).tolist() == pixels["spatial_shapes"].prod(1).tolist(),
               "NaFlex mask disagrees with the patch grids")
        size = f"NaFlex <={most} x {patch}px"
    else:
        side = arch.vision["image_size"]
        expect(tuple(pixels.shape) == (4, 3, side, side), f"pixels {tuple(pixels.shape)}, expected {side}px")
        size = f"{side}x{side}"
    limit = min(arch.tokenizer.max_length, arch.text["max_position_embeddings"],
                encoder.family.max_text_length or 10**9)
    ids = encoder.tokenize(["red " * 600])["input_ids"]
    expect(encoder.text_max_length == limit == ids.shape[1], f"token limit {ids.shape[1]}, expected {limit}")
    expect(encoder.truncated(["red " * 600, "red"]) == [True, False], "truncation not reported")
    return size, limit


def encode(encoder) -> float:
    """Embed 4 images and 4 texts; unit rows of the encoder's dimension."""
    start = time.perf_counter()
    img, txt = encoder.encode_images(_images()), encoder.encode_texts(TEXTS)
    seconds = time.perf_counter() - start
    expect(img.shape == txt.shape == (4, encoder.dim), f"embeddings {img.shape} / {txt.shape}")
    expect(bool(np.allclose(np.linalg.norm(np.concatenate([img, txt]), axis=1), 1, atol=1e-4)), "not unit rows")
    return seconds


def index_and_search(encoder, model_dir: Path, work: Path) -> float:
    """Index 16 generated JPEGs with the indexer; an image query finds itself, a composed one answers."""
    start = time.perf_counter()
    make_gallery(work / "gallery", 16, (480, 360), distinct=16)
    build(BuildConfig(gallery=work / "gallery", model=str(model_dir), out=work / "index", batch_size=8, workers=2,
                      device="cpu", factory="Flat", progress=False), encoder=encoder)
    index = load_version(work / "index")
    engine = SearchEngine(encoder, max_pixels=10**8)
    engine.swap(IndexState.of(index))
    item = index.ids[3]
    upload = Path(index.item(item)["path"]).read_bytes()
    fresh = engine.encode_pixel_batch([engine.decode(upload)])[0]
    expect(float(np.abs(fresh - index.embedding(item)).max()) < 1e-4, "the query path embeds unlike the indexer")
    # random weights can leave images nearly parallel: the image must tie with the best hit, at cosine 1
    hits = engine.search_sync(Query(image_bytes=upload, k=16)).hits
    own = next(h for h in hits if h.id == item)
    expect(abs(own.score - 1) < 1e-4 and own.score >= hits[0].score - 1e-5, "an image query did not find itself")
    expect(len(engine.search_sync(Query(image_bytes=upload, text=TEXTS[1], k=5)).hits) == 5, "composed query")
    return time.perf_counter() - start


def tat_step(encoder) -> float:
    """One TAT step on 4 pairs; only image-tower LoRA weights get gradients, text embeddings stay put."""
    texts_before = encoder.encode_texts(TEXTS)
    model = add_lora(encoder.model, 16, 16.0, 0.0, encoder.family.lora_targets)
    check_trainable(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    set_lora_train_mode(model)
    batch = {"pixels": encoder.preprocess.batch(_images()), "captions": TEXTS, "meta": [None] * 4}
    expect(pixels_len(batch["pixels"]) == 4, "batch size")
    start = time.perf_counter()
    micro_loss(encoder, batch, "pairs", 1 / 0.07, DistInfo(), 4).backward()
    with_grad = [n for n, p in model.named_parameters() if p.grad is not None]
    expect(bool(with_grad) and all("lora_" in n for n in with_grad), f"gradients outside LoRA: {with_grad[:3]}")
    optimizer.step()
    seconds = time.perf_counter() - start
    model.eval()
    expect(np.array_equal(encoder.encode_texts(TEXTS), texts_before), "the text tower moved")
    return seconds


def conform(name: str, work: Path) -> dict:
    """Every check on one architecture; the row of the table."""
    arch = ARCHS[name]
    start = time.perf_counter()
    model_dir = save_random(name, work / "model")
    built = time.perf_counter() - start
    start = time.perf_counter()
    encoder = load_encoder(str(model_dir), device="cpu")
    loaded = time.perf_counter() - start
    size, tokens = check_inputs(encoder, arch)
    row = {"arch": name, "hub_id": arch.hub_id, "family": encoder.family.name,
           "params_m": round(sum(p.numel() for p in encoder.model.parameters()) / 1e6, 1), "dim": encoder.dim,
           "text_tokens": tokens, "image_size": size, "lora_targets": ",".join(encoder.family.lora_targets),
           "build_s": round(built, 1), "load_s": round(loaded, 1), "encode_4_s": round(encode(encoder), 2),
           "index_search_16_s": round(index_and_search(encoder, model_dir, work), 1),
           "tat_step_4_s": round(tat_step(encoder), 1)}
    row["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 1)
    return row


COLUMNS = ("arch", "family", "params_m", "dim", "text_tokens", "image_size", "load_s", "encode_4_s",
           "index_search_16_s", "tat_step_4_s", "peak_rss_gb", "status")


def table(rows: list[dict]) -> str:
    """The results as a Markdown table."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join(str(r.get(c, "")) for c in COLUMNS) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Check the selected architectures, one process each; non-zero if any check failed."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(ARCHS), help=f"comma-separated (default all: {', '.join(ARCHS)})")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per architecture (default 3600)")
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    p.add_argument("--part", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.part:  # the child: one architecture
        write_result(args.result, conform(args.part, args.work))
        return 0
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in ARCHS]
    if unknown:
        p.error(f"unknown architecture(s) {', '.join(unknown)}; choose from {', '.join(ARCHS)}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="cir-conformance-") as tmp:
        work = args.work or Path(tmp)
        for name in names:
            row = run_part(Path(__file__), name, ["--work", str(work / name)], args.timeout, work / f"{name}.log")
            shutil.rmtree(work / name / "model", ignore_errors=True)  # random weights, GBs
            rows.append({"arch": name, **row})
            print(f"{name}: {row['status']} in {row['seconds']} s" +
                  (f"\n{row.get('error')}\n{row.get('log_tail', '')}" if row["status"] != "ok" else ""), flush=True)
    print(table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
