"""Benchmark the HTTP service: latency and throughput under concurrent clients.

Starts the real server (`python -m service`) on an index (built from the shapes world with the
`toy` model unless --index is given), drives it with concurrent clients sending composed
queries (an uploaded image + a text), and prints p50/p99 latency and requests/s at each
concurrency, the ratio of the HTTP p50 of one query at a time to the same pipeline called
in-process without HTTP (`SearchEngine.search_sync`; the two take turns query by query, so load
changes fall on both; goal <= 1.3 with the toy model, <= 1.1 ViT-B/32-sized), and the throughput
gain of the highest concurrency over 1.

    python perf/serving.py                       # toy model, 500-image shapes world
    python perf/serving.py --index ROOT --device cuda --requests 400 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path


import httpx
import numpy as np
import torch

from cir.encoder import load_encoder
from cir.index_store import load_version
from cir.toyworld import generate_world
from cir.search.engine import IndexState, Query, SearchEngine
from training.toy.arch import ArchConfig, build_image_processor, build_model, build_tokenizer

TEXTS = ["make it blue", "turn it into a star", "make it small and striped", "move it to the top left",
         "same shape but green", "a large red circle instead"]


# Random weights in the shape of CLIP ViT-B/32 (224 px, 12 layers, width 768): the compute of a
# real deployment without a hub download. Rankings are meaningless; timings are what count.
VIT_B32 = ArchConfig(image_size=224, patch_size=32, width=768, vision_layers=12, text_layers=12, heads=12,
                     projection_dim=512, max_text_len=77)


def make_vit_b32(out: Path, tokenizer=None) -> str:
    """Save a randomly initialised ViT-B/32-sized CLIP (default: the toy tokenizer) to `out`, once."""
    if not (out / "config.json").is_file():
        torch.manual_seed(0)
        tokenizer = build_tokenizer(VIT_B32.max_text_len) if tokenizer is None else tokenizer
        build_model(VIT_B32, len(tokenizer)).save_pretrained(out)
        tokenizer.save_pretrained(out)
        build_image_processor(VIT_B32.image_size).save_pretrained(out)
    return str(out)


def build_index(workdir: Path, model: str, gallery_size: int, device: str) -> Path:
    """A shapes-world gallery indexed with the indexer CLI; returns the index root."""
    world = workdir / "world"
    generate_world(world, seed=0, gallery_size=gallery_size, n_queries=4, n_captions=4, progress=False)
    root = workdir / "index"
    cmd = [sys.executable, "-m", "indexer", "build", "--gallery", str(world / "circo" / "COCO2017_unlabeled"),
           "--model", model, "--out", str(root), "--workers", "0", "--no-progress", "--device", device]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return root


def query_images(root: Path, n: int) -> list[bytes]:
    """Bytes of n gallery images of the served index (the clients upload these)."""
    index = load_version(root)
    return [Path(index.item(i)["path"]).read_bytes() for i in index.ids[:n]]


def percentiles(latencies: list[float]) -> tuple[float, float]:
    """p50 and p99 in milliseconds."""
    arr = np.asarray(latencies) * 1000
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def in_process_engine(root: Path, model: str | None, device: str) -> SearchEngine:
    """The server's pipeline (decode, encode, fuse, search, item lookup) in this process, warmed up."""
    index = load_version(root)
    encoder = load_encoder(model or index.manifest["model"], adapter=index.manifest.get("adapter"), device=device)
    engine = SearchEngine(encoder, max_pixels=40_000_000)
    engine.swap(IndexState.of(index))
    engine.warmup()
    return engine


def multipart(image: bytes, text: str, k: int) -> tuple[bytes, str]:
    """A /search request body (image, text, k) and its Content-Type, encoded once before timing."""
    boundary = uuid.uuid4().hex
    head = f"--{boundary}\r\nContent-Disposition: form-data; name="
    body = (f'{head}"image"; filename="q.png"\r\nContent-Type: image/png\r\n\r\n'.encode() + image +
            f'\r\n{head}"text"\r\n\r\n{text}\r\n{head}"k"\r\n\r\n{k}\r\n--{boundary}--\r\n'.encode())
    return body, f"multipart/form-data; boundary={boundary}"


def json_body(image: bytes, text: str, k: int) -> tuple[bytes, str]:
    """The same request as JSON (the image as base64), encoded once before timing."""
    return json.dumps({"image": [base64.b64encode(image).decode()], "text": text, "k": k}).encode(), "application/json"


def _post(raw: http.client.HTTPConnection, body: bytes, content_type: str) -> None:
    raw.request("POST", "/search", body, {"Content-Type": content_type})
    answer = raw.getresponse()
    if answer.status != 200:
        raise RuntimeError(f"/search answered {answer.status}: {answer.read()[:200]!r}")
    answer.read()


def overhead(engine: SearchEngine, url: str, images: list[bytes], n: int, k: int) -> dict[str, float]:
    """p50 of the same queries in-process (`search_sync`) and over HTTP, taking turns query by query.

    One after the other, never at once (they would share the cores), rotating the order so that a
    change in the machine's load falls on every side alike. HTTP clients: `http.client` with the
    multipart or JSON body encoded beforehand (what the service itself adds) and httpx (adds its
    own request encoding and response parsing, as a Python client would).
    """
    host, port = url.removeprefix("http://").split(":")
    raw = http.client.HTTPConnection(host, int(port), timeout=120)
    times: dict[str, list[float]] = {"in_process": [], "http": [], "http_json": [], "httpx": []}
    with httpx.Client(base_url=url, timeout=120) as client:
        for i in range(n + 10):
            image, text = images[i % len(images)], TEXTS[i % len(TEXTS)]
            body, content_type = multipart(image, text, k)
            as_json = json_body(image, text, k)
            sides = list(times)
            for side in sides[i % 4:] + sides[: i % 4]:
                t = time.perf_counter()
                if side == "in_process":
                    engine.search_sync(Query(image_bytes=image, text=text, k=k))
                elif side == "http":
                    _post(raw, body, content_type)
                elif side == "http_json":
                    _post(raw, *as_json)
                else:
                    client.post("/search", data={"text": text, "k": str(k)},
                                files={"image": ("q.png", image, "image/png")}).raise_for_status()
                if i >= 10:  # warm-up
                    times[side].append(time.perf_counter() - t)
    raw.close()
    return {side: percentiles(ts)[0] for side, ts in times.items()}


async def drive(url: str, images: list[bytes], concurrency: int, total: int, k: int) -> dict:
    """`concurrency` clients send `total` composed queries; latency percentiles and requests/s."""
    latencies: list[float] = []
    server_ms: list[float] = []
    errors = 0
    counter = iter(range(total))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        async def one(i: int) -> None:
            nonlocal errors
            files = {"image": ("q.png", images[i % len(images)], "image/png")}
            t = time.perf_counter()
            r = await client.post("/search", data={"text": TEXTS[i % len(TEXTS)], "k": str(k)}, files=files)
            latencies.append(time.perf_counter() - t)
            errors += r.status_code != 200
            if r.status_code == 200:
                server_ms.append(r.json()["timings_ms"]["total"])

        async def worker() -> None:
            for i in counter:
                await one(i)

        await asyncio.gather(*(one(i) for i in range(concurrency)))  # warm the connections
        latencies.clear()
        server_ms.clear()
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    p50, p99 = percentiles(latencies)
    return {"concurrency": concurrency, "requests": len(latencies), "errors": errors, "p50_ms": p50,
            "p99_ms": p99, "rps": len(latencies) / wall,
            "engine_p50_ms": float(np.median(server_ms)) if server_ms else float("nan")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(root: Path, args) -> tuple[subprocess.Popen, str]:
    """`python -m service` in a child process; returns it once /readyz answers 200."""
    port = free_port()
    env = dict(os.environ, CIR_INDEX=str(root), CIR_PORT=str(port), CIR_DEVICE=args.device,
               CIR_MAX_BATCH=str(args.max_batch), CIR_BATCH_WAIT_MS=str(args.batch_wait_ms),
               CIR_LOG_LEVEL="warning", CIR_RELOAD_INTERVAL_S="0")
    if args.model:
        env["CIR_MODEL"] = args.model
    if args.torch_threads:
        env["CIR_TORCH_THREADS"] = str(args.torch_threads)
    proc = subprocess.Popen([sys.executable, "-m", "service"], env=env)
    url = f"http://127.0.0.1:{port}"
    wait_until_ready(proc, url)
    return proc, url


def wait_until_ready(proc: subprocess.Popen, url: str, timeout_s: float = 300) -> None:
    """Poll the server's /readyz until it answers 200; stop it and raise if it exits or times out."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise RuntimeError(f"the server did not become ready in {timeout_s:.0f} s")


def batch_counters(url: str) -> dict[str, tuple[float, float]]:
    """(sum, count) of micro-batch sizes per batcher, from /metrics."""
    out: dict[str, list[float]] = {}
    for line in httpx.get(url + "/metrics").text.splitlines():
        for pos, name in enumerate(("cir_batch_size_sum{", "cir_batch_size_count{")):
            if line.startswith(name):
                out.setdefault(line.split('"')[1], [0.0, 0.0])[pos] = float(line.rsplit(" ", 1)[1])
    return {k: (v[0], v[1]) for k, v in out.items()}


def batch_means(before: dict, after: dict) -> dict[str, float]:
    """Mean micro-batch size per batcher between two /metrics snapshots."""
    means = {}
    for name, (total, count) in after.items():
        t0, c0 = before.get(name, (0.0, 0.0))
        if count > c0:
            means[name] = round((total - t0) / (count - c0), 2)
    return means


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", type=Path, help="index root to serve (default: build a shapes-world index)")
    p.add_argument("--model", default=None,
                   help="model override (default: the manifest's; 'toy' for a new build); 'vit-b32' makes a "
                        "random-weight CLIP of ViT-B/32 size in the workdir (real compute, no download)")
    p.add_argument("--gallery-size", type=int, default=500, help="shapes-world gallery size for a new build")
    p.add_argument("--workdir", type=Path, default=None,
                   help="keep the built world and index here and reuse them on later runs (default: a temp dir)")
    p.add_argument("--device", default="auto", help="encoder device for the server and the in-process run")
    p.add_argument("--concurrency", default="1,8,32", help="comma-separated client concurrencies")
    p.add_argument("--requests", type=int, default=200, help="requests per concurrency level (default 200)")
    p.add_argument("--k", type=int, default=10, help="results per query")
    p.add_argument("--max-batch", type=int, default=32, help="the server's CIR_MAX_BATCH")
    p.add_argument("--batch-wait-ms", type=float, default=2.0, help="the server's CIR_BATCH_WAIT_MS")
    p.add_argument("--torch-threads", type=int, default=None, help="torch CPU threads, server and in-process")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    return p


def report(info: dict, rows: list[dict], pair: dict[str, float], args) -> dict:
    """Print the results table and the two ratios; return them as a dict."""
    print(f"server: model {info['model']} on {info['device']}, index {info['index_version']} "
          f"({info['count']} items, {info['factory']}), max batch {args.max_batch}, wait {args.batch_wait_ms} ms")
    print(f"{'concurrency':>11} {'requests':>8} {'errors':>6} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} "
          f"{'engine p50 ms':>13}  mean batch (image/text/search)")
    for r in rows:
        b = r["mean_batch"]
        print(f"{r['concurrency']:>11} {r['requests']:>8} {r['errors']:>6} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
              f"{r['rps']:>8.1f} {r['engine_p50_ms']:>13.2f}  "
              f"{b.get('image', 0):.1f}/{b.get('text', 0):.1f}/{b.get('search', 0):.1f}")
    print("(engine p50: the server's own timings_ms.total, batching waits included, HTTP excluded; "
          "mean batch includes the warm-up requests)")
    ratio, with_httpx = pair["http"] / pair["in_process"], pair["httpx"] / pair["in_process"]
    json_ratio = pair["http_json"] / pair["in_process"]
    gain = rows[-1]["rps"] / rows[0]["rps"]
    print(f"one query at a time, in turns: in-process p50 {pair['in_process']:.2f} ms, HTTP p50 "
          f"{pair['http']:.2f} ms (multipart, http.client), {pair['http_json']:.2f} ms (JSON, base64 image, "
          f"http.client), {pair['httpx']:.2f} ms (multipart, httpx)")
    print(f"HTTP / in-process = {ratio:.2f} multipart, {json_ratio:.2f} JSON (goal <= 1.3 toy, <= 1.1 ViT-B/32); "
          f"with httpx's own encoding and parsing {with_httpx:.2f}")
    print(f"throughput gain, concurrency {rows[-1]['concurrency']} over {rows[0]['concurrency']}: {gain:.2f}x")
    return {"info": info, "rows": rows, "p50_ms_one_at_a_time": pair, "http_over_in_process": ratio,
            "json_http_over_in_process": json_ratio,
            "httpx_over_in_process": with_httpx, "throughput_gain": gain}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; non-zero when any request failed."""
    args = build_parser().parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    with tempfile.TemporaryDirectory(prefix="cir-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        if args.model == "vit-b32":
            args.model = make_vit_b32(workdir / "vit_b32")
        root = args.index or workdir / "index"
        if args.index is None and not (root / "CURRENT").is_file():
            root = build_index(workdir, args.model or "toy", args.gallery_size, args.device)
        images = query_images(root, 64)
        engine = in_process_engine(root, args.model, args.device)
        proc, url = start_server(root, args)
        try:
            info = httpx.get(url + "/info").json()
            pair = overhead(engine, url, images, args.requests, args.k)
            rows = []
            for c in levels:
                before = batch_counters(url)
                rows.append(asyncio.run(drive(url, images, c, max(args.requests, 4 * c), args.k)))
                rows[-1]["mean_batch"] = batch_means(before, batch_counters(url))
        finally:
            proc.terminate()
            proc.wait(30)
    asyncio.run(engine.stop())
    results = report(info, rows, pair, args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if all(r["errors"] == 0 for r in rows) else 1

if __name__ == "__main__":
    sys.exit(main())
