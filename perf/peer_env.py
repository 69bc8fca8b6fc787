"""The peers' virtualenv, their subprocesses, and the machine load recorded while each side runs (perf/peers.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

# clip-retrieval imports torchvision, and PyPI's torchvision is built against CUDA torch: with the CPU
# torch 2.13.0 `import torchvision` fails ("operator torchvision::nms does not exist": its _C.so needs
# libc10_cuda.so). So the peer venv gets a matched CUDA-build pair, installed first and pinned so pip
# never swaps it (on this machine both lie on local disk; elsewhere it is a multi-GB download). It
# runs on the CPU like cir.
TORCH_PAIR = ("torch==2.14.1", "torchvision==0.29.1")
# clip-anytorch imports pkg_resources, which setuptools 81 removed.
PEERS = ("clip-retrieval==2.45.0", "autofaiss==2.18.0", "setuptools<81", *TORCH_PAIR)


class PeerUnavailable(RuntimeError):
    """A peer could not be installed or run here; the message holds the exact error."""


def run(cmd: list, env: dict | None = None, log: Path | None = None) -> tuple[str, float]:
    """Run cmd; returns (stdout, wall seconds); raises PeerUnavailable with the error's tail on failure."""
    start = time.perf_counter()
    proc = subprocess.run([str(c) for c in cmd], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if log is not None:
        log.write_text(f"$ {' '.join(map(str, cmd))}\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise PeerUnavailable(f"`{' '.join(map(str, cmd[:4]))} ...` exited {proc.returncode}:\n{tail}")
    return proc.stdout, seconds


def peer_venv(venv: Path) -> Path:
    """The peer virtualenv's Python, created and filled on first use (torch pinned first)."""
    python, stamp = venv / "bin" / "python", venv / ".cir-peers"
    wanted = " ".join(PEERS)
    if stamp.is_file() and stamp.read_text() == wanted:
        return python
    print(f"# installing the peers into {venv}: {wanted}", flush=True)
    run([sys.executable, "-m", "venv", venv])
    run([python, "-m", "pip", "install", "-q", *TORCH_PAIR])
    run([python, "-m", "pip", "install", "-q", *PEERS])
    stamp.write_text(wanted)
    return python


def thread_env(threads: int) -> dict:
    """The environment of a side's process: the same OpenMP/MKL threads, CPU only, offline."""
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), CUDA_VISIBLE_DEVICES="",
                HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", WANDB_MODE="disabled")


class LoadWatch:
    """The machine's load averages while a block runs: `uptime`'s triple at start and end, the 1-min range."""

    def __init__(self, every_s: float = 5.0):
        self.every_s, self.samples = every_s, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.every_s):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> LoadWatch:
        self.start = [round(v, 2) for v in os.getloadavg()]
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.end = [round(v, 2) for v in os.getloadavg()]

    def record(self) -> dict:
        """JSON-ready: start/end (1, 5, 15-min load) and the lowest and highest 1-min load sampled."""
        ones = [self.start[0], *self.samples, self.end[0]]
        return {"start": self.start, "end": self.end, "1min_range": [round(min(ones), 1), round(max(ones), 1)],
                "1min_mean": round(sum(ones) / len(ones), 2)}
