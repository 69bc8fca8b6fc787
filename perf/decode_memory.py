"""Measure the server's memory under large uploads: RSS before, at the peak and after a burst.

Starts the real server (`python -m service`) on a small shapes-world index (toy model), makes
one large, highly compressible PNG (default 6000x6000 pixels, a few dozen KB: under the pixel
guard, so it is decoded), sends it `--uploads` times with `--concurrency` clients at once, and
samples the server process's resident set size (VmRSS) every 10 ms. Prints RSS before the
burst, its peak, and after `--settle-s` seconds of quiet.

    python perf/decode_memory.py                          # 24 uploads of a 6000x6000 PNG, 8 at a time
    python perf/decode_memory.py --env CIR_DECODE_MEMORY_MB=256 --json mem.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from cir.toyworld import generate_world
from serving import wait_until_ready


def rss_mb(pid: int) -> float:
    """The resident set size of a process in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class PeakSampler(threading.Thread):
    """Samples a process's RSS every `interval` seconds and keeps the highest."""

    def __init__(self, pid: int, interval: float = 0.01):
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak = pid, interval, 0.0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(self.interval)


def big_png(side: int) -> bytes:
    """A side x side RGB PNG of flat coloured squares: many pixels, few bytes."""
    cells = np.random.default_rng(0).integers(0, 255, (6, 6, 3), dtype=np.uint8)
    block = -(-side // 6)
    pixels = np.kron(cells, np.ones((block, block, 1), dtype=np.uint8))[:side, :side]
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def build_index(workdir: Path) -> Path:
    """A 48-image shapes-world gallery indexed with the toy model."""
    world = workdir / "world"
    generate_world(world, seed=0, gallery_size=48, n_queries=4, n_captions=4, progress=False)
    root = workdir / "index"
    subprocess.run([sys.executable, "-m", "indexer", "build", "--gallery", str(world / "circo" / "COCO2017_unlabeled"),
                    "--model", "toy", "--out", str(root), "--workers", "0", "--no-progress"], check=True,
                   stdout=subprocess.DEVNULL)
    return root


def start_server(root: Path, extra_env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """`python -m service` in a child process; returns it once /readyz answers 200."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, CIR_INDEX=str(root), CIR_PORT=str(port), CIR_LOG_LEVEL="warning",
               CIR_RELOAD_INTERVAL_S="0", CIR_MAX_UPLOAD_MB="20", **extra_env)
    proc = subprocess.Popen([sys.executable, "-m", "service"], env=env)
    url = f"http://127.0.0.1:{port}"
    wait_until_ready(proc, url)
    return proc, url


def burst(url: str, image: bytes, uploads: int, concurrency: int) -> tuple[list[int], float]:
    """Send `uploads` searches with the image, `concurrency` at a time; status codes and seconds taken."""
    with httpx.Client(base_url=url, timeout=300) as client:
        def one(_: int) -> int:
            files = {"image": ("big.png", image, "image/png")}
            return client.post("/search", data={"text": "make it blue"}, files=files).status_code

        start = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            codes = list(pool.map(one, range(uploads)))
        return codes, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    """Run the measurement; non-zero when an upload was not answered 200."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", type=Path, help="index root to serve (default: a 48-image shapes world, toy model)")
    p.add_argument("--side", type=int, default=6000, help="side of the square PNG in pixels (default 6000)")
    p.add_argument("--uploads", type=int, default=24, help="uploads in the burst (default 24)")
    p.add_argument("--concurrency", type=int, default=8, help="uploads at once (default 8)")
    p.add_argument("--settle-s", type=float, default=3.0, help="quiet seconds before the 'after' reading")
    p.add_argument("--env", action="append", default=[], metavar="CIR_X=V", help="extra server environment")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = p.parse_args(argv)
    extra = dict(item.split("=", 1) for item in args.env)
    image = big_png(args.side)
    with tempfile.TemporaryDirectory(prefix="cir-mem-") as tmp:
        root = args.index or build_index(Path(tmp))
        proc, url = start_server(root, extra)
        try:
            small = Image.new("RGB", (64, 64), (10, 200, 30))
            buf = io.BytesIO()
            small.save(buf, format="PNG")
            burst(url, buf.getvalue(), 4, 2)  # warm up: model, threads, first allocations
            time.sleep(1.0)
            before = rss_mb(proc.pid)
            sampler = PeakSampler(proc.pid)
            sampler.start()
            codes, seconds = burst(url, image, args.uploads, args.concurrency)
            time.sleep(args.settle_s)
            sampler.done.set()
            sampler.join()
            after = rss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(30)
    result = {"side": args.side, "png_bytes": len(image), "uploads": args.uploads, "concurrency": args.concurrency,
              "env": extra, "status_codes": sorted(set(codes)), "seconds": round(seconds, 2),
              "rss_before_mb": round(before), "rss_peak_mb": round(max(sampler.peak, after)), "rss_after_mb": round(after)}
    print(f"{args.uploads} uploads of a {args.side}x{args.side} PNG ({len(image) / 1024:.0f} KiB), "
          f"{args.concurrency} at a time, in {seconds:.1f} s; answers {result['status_codes']}")
    print(f"server RSS: before {result['rss_before_mb']} MiB, peak {result['rss_peak_mb']} MiB, "
          f"after {args.settle_s:.0f} s {result['rss_after_mb']} MiB")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if set(codes) == {200} else 1


if __name__ == "__main__":
    sys.exit(main())
