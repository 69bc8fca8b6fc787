"""Seconds from starting the demo to its page being ready: `/readyz` 200 (and, with --wait-tat,
until the TAT adapter's index is served).

    python perf/demo_ready.py                       # `cir demo` in a fresh temporary workdir
    python perf/demo_ready.py --command make        # `make demo` in a fresh clone of this checkout
                                                    # (venv and packages too; from the local cache)

A measurement, not a test: it prints the seconds and the machine's load (/proc/loadavg) at
the start and at the end, since a shared machine's load is most of the variation.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, dict | None]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (OSError, ValueError):
        return 0, None


def _command(kind: str, work: Path, port: int) -> tuple[list[str], Path]:
    if kind == "cir":
        return [sys.executable, "-m", "cir_cli", "demo", "--workdir", str(work / ".demo"), "--port", str(port)], ROOT
    clone = work / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    return ["make", "demo"], clone


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--command", choices=("cir", "make"), default="cir",
                   help="cir: `cir demo` with this checkout's interpreter; make: `make demo` in a fresh clone")
    p.add_argument("--timeout", type=float, default=1800, help="give up after this many seconds")
    p.add_argument("--wait-tat", action="store_true", help="also time until /info shows the TAT adapter")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="cir-demo-ready-"))
    port = _free_port()
    command, cwd = _command(args.command, work, port)
    env = {**os.environ, "CIR_PORT": str(port), "HF_HUB_OFFLINE": "1"}
    load_before = _load()
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=open(work / "demo.log", "wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    ready = tat = None
    try:
        while time.perf_counter() - start < args.timeout and proc.poll() is None:
            now = time.perf_counter() - start
            if ready is None and _get(f"http://127.0.0.1:{port}/readyz")[0] == 200:
                ready = now
                print(f"ready: /readyz 200 after {ready:.1f} s (load at start {load_before}, now {_load()})",
                      flush=True)
                if not args.wait_tat:
                    break
            if ready is not None and args.wait_tat:
                status, info = _get(f"http://127.0.0.1:{port}/info")
                if status == 200 and info and info.get("adapter") and not info.get("background"):
                    tat = now
                    print(f"TAT adapter served after {tat:.1f} s (load now {_load()})", flush=True)
                    break
            time.sleep(0.25)
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # the demo's own Ctrl-C path: server and TAT job stop
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    if ready is None:
        print(f"not ready within {args.timeout:.0f} s; log: {work / 'demo.log'}", file=sys.stderr)
        return 1
    print(json.dumps({"command": args.command, "ready_s": round(ready, 1), "tat_served_s": tat and round(tat, 1),
                      "load_at_start": load_before, "load_at_end": _load()}))
    if args.keep:
        print(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
