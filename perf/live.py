"""Benchmark the live gallery (issue 20): write visibility, upsert and patch throughput, search with
pending changes, compaction cost, and serving during compaction. Prints each measured ratio
against its goal.

HTTP part (the real server, `python -m service`, toy model, a GALLERY-image JPEG gallery):
- visibility: from a PATCH's 2xx to the first search (another connection) that finds the item by
  its new value; p99 (goal <= 50 ms)
- upserts with images at concurrency 8, images/s, over the indexer's images/s on the same images
  (`cir index build`, its --json images_per_s) (goal >= 0.7): one image per PUT /items/{id}, and
  --bulk-images images (base64) per POST /items/bulk
- metadata patches through POST /items/bulk, items/s (goal >= 5,000)
Synthetic part (perf/live_synthetic.py; N random unit vectors in an HNSW32 version):
- search p99 with 10,000 pending upserts and 10,000 pending deletions over p99 on the compacted
  version (goal <= 1.3), recall@10 of both against brute force (goal: pending no lower)
- compaction of 1% changes over the full build's time (goal <= 0.10); search p99 during that
  compaction over p99 at rest (goal <= 2)

    flock /tmp/cir-bench.lock python perf/live.py                       # 10k toy gallery, 200k synthetic
    python perf/live.py --synthetic-n 1000000 --json out.json           # the issue's 1M x 512
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from indexing import make_gallery  # noqa: E402
from live_synthetic import run as run_synthetic  # noqa: E402
from serving import free_port, wait_until_ready  # noqa: E402

KEY = "bench-key"


def build(gallery: Path, out: Path, model: str) -> dict:
    """`cir index build` of a manifest; its --json line."""
    cmd = [sys.executable, "-m", "indexer", "build", "--gallery", str(gallery), "--model", model, "--out", str(out),
           "--no-progress", "--json", "--workers", "1"]
    line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    return json.loads(line)


def manifest(folder: Path, paths: list[Path], out: Path) -> Path:
    out.write_text("".join(json.dumps({"path": str(p), "id": p.stem, "tag": "t0", "price": i % 100}) + "\n"
                           for i, p in enumerate(paths)))
    return out


def start(root: Path, device: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, CIR_INDEX=str(root), CIR_PORT=str(port), CIR_DEVICE=device, CIR_API_KEY=KEY,
               CIR_LOG_LEVEL="warning", CIR_COMPACT_PENDING="0", CIR_COMPACT_AGE_S="0", CIR_MAX_UPLOAD_MB="10")
    proc = subprocess.Popen([sys.executable, "-m", "service"], env=env)
    url = f"http://127.0.0.1:{port}"
    wait_until_ready(proc, url)
    return proc, url


def visibility(url: str, ids: list[str], n: int) -> list[float]:
    """Seconds from each PATCH's 2xx to the first search on another connection that sees the new value."""
    out = []
    with httpx.Client(base_url=url, headers={"X-API-Key": KEY}) as writer, httpx.Client(base_url=url) as reader:
        for i in range(n):
            item, value = ids[i % len(ids)], f"v{i}"
            assert writer.patch(f"/items/{item}", json={"tag": value}).status_code == 200
            t0 = time.perf_counter()
            while True:
                r = reader.post("/search", data={"text": "a shape", "k": 1, "filter": json.dumps({"tag": value})})
                if [h["id"] for h in r.json()["results"]] == [item]:
                    break
            out.append(time.perf_counter() - t0)
    return out


def upserts(url: str, paths: list[Path], concurrency: int) -> float:
    """Images/s of PUT /items/{id} with an image at `concurrency` clients."""
    blobs = [p.read_bytes() for p in paths]

    def put(i: int) -> None:
        with httpx.Client(base_url=url, headers={"X-API-Key": KEY}, timeout=120) as c:
            for j in range(i, len(blobs), concurrency):
                r = c.put(f"/items/up{j}", files={"image": ("x.jpg", blobs[j], "image/jpeg")},
                          data={"metadata": json.dumps({"tag": "up", "price": j % 100})})
                assert r.status_code == 200, r.text

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(put, range(concurrency)))
    return len(blobs) / (time.perf_counter() - t0)


def bulk_upserts(url: str, paths: list[Path], concurrency: int, per_request: int) -> float:
    """Images/s of upserts sent `per_request` images (base64) per POST /items/bulk at `concurrency` clients."""
    blobs = [base64.b64encode(p.read_bytes()).decode() for p in paths]
    starts = list(range(0, len(blobs), per_request))

    def send(mine: list[int]) -> None:
        with httpx.Client(base_url=url, headers={"X-API-Key": KEY}, timeout=300) as c:
            for start in mine:
                ops = [{"op": "upsert", "id": f"bulk{j}", "image": blobs[j], "metadata": {"tag": "bulk", "price": j % 100}}
                       for j in range(start, min(len(blobs), start + per_request))]
                r = c.post("/items/bulk", json={"operations": ops})
                assert r.status_code == 200 and r.json()["failed"] == 0, r.text[:300]

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(send, [starts[i::concurrency] for i in range(concurrency)]))
    return len(blobs) / (time.perf_counter() - t0)


def bulk_patches(url: str, ids: list[str], total: int, per_request: int = 10_000) -> float:
    """Items/s of metadata patches through POST /items/bulk."""
    with httpx.Client(base_url=url, headers={"X-API-Key": KEY}, timeout=300) as c:
        t0 = time.perf_counter()
        for start in range(0, total, per_request):
            ops = [{"op": "patch", "id": ids[i % len(ids)], "metadata": {"price": i % 97}}
                   for i in range(start, min(total, start + per_request))]
            r = c.post("/items/bulk", json={"operations": ops})
            assert r.status_code == 200 and r.json()["failed"] == 0, r.text[:300]
        return total / (time.perf_counter() - t0)


def http_part(work: Path, args) -> dict:
    gallery = work / "gallery"
    make_gallery(gallery, args.gallery + args.upserts, (128, 96), distinct=args.gallery + args.upserts)
    paths = sorted(gallery.glob("*.jpg"))
    base, extra = paths[: args.gallery], paths[args.gallery:]
    indexed = build(manifest(gallery, base, work / "gallery.jsonl"), work / "root", args.model)
    twin = build(manifest(gallery, extra, work / "extra.jsonl"), work / "extra_root", args.model)  # same images
    proc, url = start(work / "root", args.device)
    try:
        ids = [p.stem for p in base]
        vis = visibility(url, ids, args.visibility)
        rate = upserts(url, extra, 8)
        bulk_rate = bulk_upserts(url, extra, 8, args.bulk_images)
        patches = bulk_patches(url, ids, args.patches)
    finally:
        proc.terminate()
        proc.wait()
    return {"gallery": len(base), "build_images_per_s": indexed["images_per_s"],
            "indexer_images_per_s_same_images": twin["images_per_s"], "visibility_p50_ms":
            round(float(np.percentile(vis, 50)) * 1000, 2), "visibility_p99_ms":
            round(float(np.percentile(vis, 99)) * 1000, 2), "upserts_per_s_c8": round(rate, 2),
            "upsert_ratio": round(rate / twin["images_per_s"], 3), "bulk_images_per_request": args.bulk_images,
            "bulk_upserts_per_s_c8": round(bulk_rate, 2), "bulk_upsert_ratio": round(bulk_rate / twin["images_per_s"], 3),
            "bulk_patches_per_s": round(patches, 1)}


def report(h: dict, s: dict) -> None:
    rows = [("visibility p99 (ms)", h.get("visibility_p99_ms"), "<= 50"),
            ("upserts c8 / indexer images/s", h.get("upsert_ratio"), ">= 0.7"),
            ("bulk upserts c8 / indexer images/s", h.get("bulk_upsert_ratio"), ">= 0.7"),
            ("bulk patches items/s", h.get("bulk_patches_per_s"), ">= 5000"),
            ("search p99 pending / compacted", s and round(s["search_p99_ms_pending"] / s["search_p99_ms_compacted"], 3),
             "<= 1.3"),
            ("recall@10 pending - compacted", s and round(s["recall_pending"] - s["recall_compacted"], 4), ">= 0"),
            ("compaction 1% / full build", s and round(s["compaction_1pct_s"] / s["full_build_s"], 3), "<= 0.10"),
            ("search p99 during compaction / rest",
             s and round(s["search_p99_ms_during_compaction"] / s["search_p99_ms_rest"], 3), "<= 2")]
    for name, value, goal in rows:
        print(f"{name:40s} {value!s:>10s}   goal {goal}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="toy", help="model of the HTTP part (default toy)")
    p.add_argument("--device", default="cpu", help="the server's encoder device")
    p.add_argument("--gallery", type=int, default=10_000, help="images in the served gallery (default 10,000)")
    p.add_argument("--upserts", type=int, default=2000,
                   help="images upserted over HTTP, once by PUT and once by the bulk route (default 2,000)")
    p.add_argument("--bulk-images", type=int, default=50, help="images per bulk upsert request (default 50)")
    p.add_argument("--visibility", type=int, default=200, help="writes timed for visibility (default 200)")
    p.add_argument("--patches", type=int, default=20_000, help="patches sent through the bulk route (default 20,000)")
    p.add_argument("--synthetic-n", type=int, default=200_000, help="rows of the synthetic index (the issue: 1,000,000)")
    p.add_argument("--dim", type=int, default=512, help="synthetic dimension (default 512)")
    p.add_argument("--pending", type=int, default=10_000, help="pending upserts and deletions each (default 10,000)")
    p.add_argument("--skip-http", action="store_true", help="only the synthetic part")
    p.add_argument("--skip-synthetic", action="store_true", help="only the HTTP part")
    p.add_argument("--workdir", type=Path, default=None, help="keep the galleries and roots here")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = p.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="cir-live-bench-"))
    h = {} if args.skip_http else http_part(work, args)
    s = {} if args.skip_synthetic else run_synthetic(work, args.synthetic_n, args.dim, "HNSW32", args.pending)
    out = {"http": h, "synthetic": s, "loadavg": Path("/proc/loadavg").read_text().split()[:3],
           "cpus": os.cpu_count()}
    print(json.dumps(out, indent=2))
    report(h, s)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
