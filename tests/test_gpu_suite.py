"""`make gpu-suite DRY=1`: the GPU check suite's own code, run on the CPU with tiny sizes, so it never rots."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ["throughput", "indexer", "faiss", "service", "tat", "docker"]


def test_dry_run_writes_a_complete_report(tmp_path):
    out = tmp_path / "suite"
    proc = subprocess.run([sys.executable, str(ROOT / "perf" / "gpu_suite.py"), "--dry", "--out", str(out)],
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["dry"] is True and report["suite"] == "cir-gpu-suite" and report["failed"] == {}
    assert list(report["sections"]) == SECTIONS and report["host"]["device"] == "cpu"
    s = report["sections"]
    assert all(s[n]["status"] == "ok" for n in SECTIONS[:-1]), {n: s[n].get("error") for n in SECTIONS}
    assert s["docker"]["status"] == "skipped" and s["docker"]["reason"] == report["skipped"]["docker"]
    assert all(s[n]["seconds"] <= s[n]["budget_s"] + 5 for n in SECTIONS)

    (tiny,) = s["throughput"]["rows"]
    assert tiny["images_per_s"] > 0 and tiny["tflops"] > 0 and s["throughput"]["peak_bf16_tflops"] is None
    assert s["indexer"]["indexer_images_per_s"] > 0 and s["indexer"]["ratio_to_slower_stage"] > 0
    flat, ivf = s["faiss"]["rows"]
    assert flat["factory"] == "Flat" and flat["same_ids"] == 1.0 and flat["cpu_recall_at_10"] == 1.0
    assert ivf["factory"].startswith("IVF") and 0 < ivf["device_recall_at_10"] <= 1
    assert [r["concurrency"] for r in s["service"]["rows"]] == [1, 8]
    assert all(r["errors"] == 0 and r["p99_ms"] >= r["p50_ms"] > 0 for r in s["service"]["rows"])
    assert s["tat"]["compute_steps_per_s"] > 0 and s["tat"]["train_steps_per_s"] > 0

    markdown = (out / "report.md").read_text()
    assert markdown.startswith("# CIR GPU suite (dry run on the CPU)")
    assert all(f"## {n}: " in markdown for n in SECTIONS) and "| Flat |" in markdown
    assert all((out / "logs" / f"{n}.log").is_file() for n in SECTIONS)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_refuses_a_full_run_without_a_gpu(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "perf" / "gpu_suite.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "DRY=1" in proc.stderr and not (tmp_path / "report.json").exists()


CHILD = """
import json, subprocess, sys, time
part, result = sys.argv[sys.argv.index("--part") + 1], sys.argv[sys.argv.index("--result") + 1]
if part == "hang":  # a grandchild (like a DataLoader worker or a server) that would outlive a plain kill
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    open(sys.argv[-1], "w").write(str(child.pid))
    time.sleep(120)
if part == "boom":
    raise ValueError("boom")
json.dump({"status": "skipped" if part == "skip" else "ok", "value": 1}, open(result, "w"))
"""


def test_parts_are_isolated_and_time_boxed(tmp_path):
    spec = importlib.util.spec_from_file_location("isolate", ROOT / "perf" / "isolate.py")
    isolate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(isolate)
    script = tmp_path / "part.py"
    script.write_text(CHILD)
    ok = isolate.run_part(script, "ok", [], 60, tmp_path / "ok.log")
    assert ok["status"] == "ok" and ok["value"] == 1
    assert isolate.run_part(script, "skip", [], 60, tmp_path / "skip.log")["status"] == "skipped"
    boom = isolate.run_part(script, "boom", [], 60, tmp_path / "boom.log")
    assert boom["status"] == "failed" and "ValueError: boom" in boom["log_tail"]
    pid_file = tmp_path / "grandchild.pid"
    hang = isolate.run_part(script, "hang", [str(pid_file)], 5, tmp_path / "hang.log")
    assert hang["status"] == "timeout" and hang["seconds"] < 30
    stat = Path(f"/proc/{pid_file.read_text()}/stat")
    for _ in range(50):  # the whole process group went (at most an unreaped zombie remains)
        if not stat.exists() or stat.read_text().split()[2] == "Z":
            break
        time.sleep(0.1)
    assert not stat.exists() or stat.read_text().split()[2] == "Z"
