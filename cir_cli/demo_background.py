"""The demo's TAT run in the background: render its captions, train, index with the adapter and
publish, while the base model's index serves.

The job runs the same `cir toyworld`, `cir train` and `cir index build` commands the demo prints, as child
processes at a lower CPU priority, so the page answers at once whatever the machine's load.
A status file (`{"message": ...}`, written atomically) carries the training step to the
server's /info and the page's info line; it is removed once the adapter's index is published,
when the server's own hot swap (service/swap.py) serves it and the page shows the adapter.
Stopping the demo stops the job; the next start resumes training from its checkpoint.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from cir.io import atomic_write_text

TRAIN_LOG = "train_log.jsonl"  # what `cir train` appends every --log-every steps (training.runtime)
POLL_S = 1.0
NICE = 10


def write_status(path: Path, message: str) -> None:
    """Replace the status file with one message (the server reads it whole or not at all)."""
    atomic_write_text(path, json.dumps({"message": message}) + "\n")


def last_step(adapter: Path) -> int | None:
    """The last step `cir train` logged into `adapter` (None before its first log line)."""
    try:
        lines = (adapter / TRAIN_LOG).read_text("utf-8").splitlines()
        return int(json.loads(lines[-1])["step"]) if lines else None
    except (OSError, ValueError, KeyError, IndexError):
        return None


def _command(argv: list[str]) -> list[str]:
    """`cir ARGV` as a child command, at a lower CPU priority: the server keeps the CPU it needs."""
    command = [sys.executable, "-m", "cir_cli", *argv]
    nice = shutil.which("nice")  # the command, not preexec_fn (unsafe with the server's threads)
    return [nice, "-n", str(NICE), *command] if nice else command


class BackgroundTat:
    """Runs the TAT data, `cir train ...` and `cir index build ...` steps in child processes, one after
    the other, reporting to a status file; the build's argv is a callable (whether it needs
    --force-new is known only once training ends)."""

    def __init__(self, data_argv: list[str] | None, train_argv: list[str], build_argv, adapter: Path,
                 max_steps: int, status: Path, log: Path) -> None:
        self.data_argv, self.train_argv, self.build_argv = data_argv, train_argv, build_argv
        self.adapter, self.max_steps, self.status, self.log = adapter, max_steps, status, log
        self.proc: subprocess.Popen | None = None
        self.stopping = threading.Event()
        self.result: str | None = None  # "published", "failed" or "stopped"
        self.thread = threading.Thread(target=self._run, name="demo-tat", daemon=True)

    def start(self) -> None:
        """Start the job's thread (it returns at once)."""
        first = "rendering its training captions" if self.data_argv else "starting"
        write_status(self.status, f"TAT training: {first} (the base model serves meanwhile)")
        self.thread.start()

    def stop(self) -> None:
        """Stop the running child (training resumes from its checkpoint on the next demo start)."""
        self.stopping.set()
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.thread.join(timeout=30)
        self.status.unlink(missing_ok=True)

    def _child(self, argv: list[str], on_poll=None) -> int:
        if self.stopping.is_set():
            return -1
        with open(self.log, "ab") as log:
            log.write(f"\n$ cir {' '.join(argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(_command(argv), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
            while True:
                try:
                    return self.proc.wait(timeout=POLL_S)
                except subprocess.TimeoutExpired:
                    if on_poll is not None:
                        on_poll()

    def _progress(self) -> None:
        step = last_step(self.adapter)
        of = f" of {self.max_steps}" if self.max_steps else ""
        shown = "starting" if step is None else f"step {step}{of}"
        write_status(self.status, f"TAT training: {shown} (the base model serves meanwhile)")

    def _run(self) -> None:
        try:
            if self.data_argv and self._child(self.data_argv) != 0:
                return self._finish("failed", f"rendering the TAT captions failed (log: {self.log})")
            if self._child(self.train_argv, self._progress) != 0:
                return self._finish("failed", f"TAT training failed (log: {self.log})")
            write_status(self.status, "TAT trained: indexing the gallery with the adapter")
            if self._child(self.build_argv()) != 0:
                return self._finish("failed", f"indexing with the TAT adapter failed (log: {self.log})")
            self._finish("published", None)
        except OSError as exc:
            self._finish("failed", f"the TAT job could not run: {exc}")

    def _finish(self, result: str, message: str | None) -> None:
        self.result = "stopped" if self.stopping.is_set() else result
        if self.result == "published":
            self.status.unlink(missing_ok=True)  # the page now shows the adapter the server swapped in
            print("\n==> TAT adapter trained and indexed: the server swaps its index in (no restart)", flush=True)
        elif self.result == "failed" and message:
            write_status(self.status, message)
            print(f"\ncir demo: {message}", file=sys.stderr, flush=True)
