"""Start a `python -m MODULE ...` child that a test can stop with Ctrl-C (SIGINT)."""

from __future__ import annotations

import signal
import subprocess
import sys


def _default_sigint() -> None:
    # A shell starts background jobs with SIGINT ignored and children inherit that, so a suite
    # run in the background (CI, nohup) would otherwise test a process that cannot see Ctrl-C.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_cli(args: list[str], **kw) -> subprocess.Popen:
    """Popen of `python -m ARGS` with piped text stdout/stderr and SIGINT at its default."""
    return subprocess.Popen([sys.executable, "-m", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_default_sigint, **kw)
