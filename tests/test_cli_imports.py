"""`--help` (and any usage error) answers before torch, transformers, faiss, FastAPI or peft load.

Each CLI module imports only light modules (its config dataclass, cir.defaults) and imports the
heavy ones in `main` once the arguments parse (CONTRIBUTING.md, "Command lines").
"""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "transformers", "faiss", "fastapi", "peft", "uvicorn", "matplotlib")
COMMANDS = [["train", "--help"], ["train", "--lr", "fast"], ["index", "--help"], ["index", "build", "--help"],
            ["index", "apply", "--help"], ["index", "compact", "--help"],
            ["serve", "--help"], ["eval", "--help"], ["demo", "--help"], ["toyworld", "--help"],
            ["feedback", "--help"], ["feedback", "export", "--help"], ["train", "--triplets", "x.json"]]

PROBE = f"""
import contextlib, io, json, sys
from cir_cli.main import main
seen = {{}}
for argv in {COMMANDS!r}:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            main(argv)
        except SystemExit:
            pass
    seen[" ".join(argv)] = [m for m in {HEAVY!r} if m in sys.modules]
print(json.dumps(seen))
"""


def test_help_and_usage_errors_load_no_heavy_library():
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {" ".join(argv): [] for argv in COMMANDS}
