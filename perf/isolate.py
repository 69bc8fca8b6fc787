"""Run one part of a benchmark in its own process: time-boxed, failure-isolated, the result as JSON.

A part is `python SCRIPT --part NAME --result FILE ...`: the child writes its JSON result to FILE
with `write_result`. `run_part` returns {"status": "ok", "seconds": ..., **result}; or status
"failed" (non-zero exit) or "timeout" (the whole process group is killed: DataLoader workers
and servers it started go with it), each with the tail of its output. A part that finds it
cannot run on this machine writes {"status": "skipped", "reason": ...} itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cir.io import atomic_write_json


def write_result(path: str | Path, result: dict) -> None:
    """The child's side: write the part's result (JSON) where the parent reads it."""
    atomic_write_json(path, result)


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_part(script: Path, part: str, args: list[str], timeout_s: float, log: Path, env: dict | None = None) -> dict:
    """Run one part in a child process; its output goes to `log`, its result comes back as a dict."""
    log.parent.mkdir(parents=True, exist_ok=True)
    result_file = log.with_suffix(".result.json")
    result_file.unlink(missing_ok=True)
    cmd = [sys.executable, str(script), "--part", part, "--result", str(result_file), *args]
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = None
    seconds = round(time.perf_counter() - start, 1)
    output = log.read_text(errors="replace")
    if code is None:
        return {"status": "timeout", "seconds": seconds, "error": f"stopped at its {timeout_s:.0f} s budget",
                "log_tail": _tail(output)}
    if code != 0 or not result_file.is_file():
        return {"status": "failed", "seconds": seconds, "error": f"exit status {code}", "log_tail": _tail(output)}
    result = json.loads(result_file.read_text())
    return {"status": result.pop("status", "ok"), "seconds": seconds, **result}
