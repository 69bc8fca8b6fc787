"""The sections of the GPU check suite; perf/gpu_suite.py runs each as `python perf/gpu_checks.py --part NAME`.

Each section function takes its sizes (SIZES[mode][name]), a work folder shared by the run's
sections (models are built once) and the device, and returns a JSON-able result; `Skip` says
why a section cannot run on this machine. The sizes of a GPU run ("full") fit the suite's
8-minute budget on one H100/H200-class GPU; the dry run ("dry") runs the same code on a CPU,
with budgets that leave room for a loaded 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import torch
from isolate import write_result

from cir.index_store import apply_search_params, to_gpu
from indexer.factory import exact_topk, heldout_queries, ivf_nlist, make_index, recall_at_k
from indexer.synthetic import synthetic_vectors

# The benchmark scripts reused here import transformers and peft (~8 s of CPU): each section's
# process imports only those it runs, so the faiss and docker sections start at once.

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("throughput", "indexer", "faiss", "service", "tat", "docker")
CPUS = os.cpu_count() or 2
# Per section: its time budget and sizes on a GPU ("full", 480 s in all) and in the CPU dry run ("dry").
SIZES = {
    "full": {
        "throughput": {"budget_s": 100, "archs": ["b32", "b16", "l14"], "batch": 256, "images": 5120},
        "indexer": {"budget_s": 75, "images": 10000, "batch": 256, "workers": max(1, CPUS - 2)},
        "faiss": {"budget_s": 45, "n": 200_000, "dim": 768, "queries": 1000, "nprobe": 32},
        "service": {"budget_s": 100, "model": "vit-b32", "requests": 400, "concurrency": "1,8,32", "gallery": 500},
        "tat": {"budget_s": 100, "arch": "l14", "pairs": 2560, "batch": 256, "steps": 10,
                "workers": max(1, CPUS - 2)},
        "docker": {"budget_s": 60},
    },
    "dry": {
        "throughput": {"budget_s": 150, "archs": ["tiny"], "batch": 8, "images": 16},
        "indexer": {"budget_s": 150, "images": 32, "batch": 8, "workers": 1},
        "faiss": {"budget_s": 90, "n": 4000, "dim": 64, "queries": 50, "nprobe": 8},
        "service": {"budget_s": 240, "model": "toy", "requests": 16, "concurrency": "1,8", "gallery": 24},
        "tat": {"budget_s": 150, "arch": "tiny", "pairs": 96, "batch": 8, "steps": 2, "workers": 0},
        "docker": {"budget_s": 60},
    },
}


class Skip(Exception):
    """The section cannot run on this machine; the message says why."""


def _model(work: Path, arch: str, device: str) -> Path:
    """A random CLIP of tat_speed's architecture `arch`, built once per suite run (on the device: fast init)."""
    import tat_speed  # noqa: PLC0415 - heavy, see above

    out = work / "models" / arch
    if not (out / "config.json").is_file():
        shutil.rmtree(out, ignore_errors=True)
        with torch.device(device):
            tat_speed.make_model(out, arch)
    return out


def throughput(cfg: dict, work: Path, device: str) -> dict:
    """Image-tower forward images/s at a fixed batch, as TFLOP/s and a share of the device's peak."""
    import indexing  # noqa: PLC0415 - heavy, see above
    import tat_speed  # noqa: PLC0415
    from cir.encoder import load_encoder  # noqa: PLC0415

    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    peak = tat_speed.peak_tflops(name)
    rows = []
    for arch in cfg["archs"]:
        encoder = load_encoder(str(_model(work, arch, device)), device=device)
        rate = indexing.encode_rate(encoder, cfg["batch"], cfg["images"])
        gflops = tat_speed.ARCHS[arch][3]
        achieved = rate * gflops / 1000
        rows.append({"arch": arch, "gflop_per_image": gflops, "batch": cfg["batch"], "images_per_s": round(rate, 1),
                     "tflops": round(achieved, 4), "share_of_peak": round(achieved / peak, 3) if peak else None,
                     "dtype": str(encoder.autocast_dtype or "float32")})
        del encoder
        if device == "cuda":
            torch.cuda.empty_cache()
    return {"device": name, "peak_bf16_tflops": peak, "rows": rows}


def indexer(cfg: dict, work: Path, device: str) -> dict:
    """perf/indexing.py on a ViT-B/32-sized model (the toy model in the dry run)."""
    import indexing  # noqa: PLC0415 - heavy, see above

    model = ["--synthetic-vitb32"] if device == "cuda" else ["--model", "toy"]
    args = indexing.parse_args([*model, "--images", str(cfg["images"]), "--batch-size", str(cfg["batch"]),
                                "--workers", str(cfg["workers"]), "--device", device])
    return indexing.measure(args)


def _timed_search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    index.search(queries[:8], k)  # warm-up
    start = time.perf_counter()
    _, ids = index.search(queries, k)
    return ids, time.perf_counter() - start


def _index_side(vectors: np.ndarray, queries: np.ndarray, factory: str, use_gpu: bool, nprobe: int) -> dict:
    """Build one index (on the GPU if asked), search it as the service does; times, ids, recall inputs."""
    start = time.perf_counter()
    index, built_on_gpu = make_index(vectors, factory, use_gpu=use_gpu)
    build_s = time.perf_counter() - start
    resources = None
    if use_gpu:  # the service's path: cir.index_store.load_version(gpu=True)
        index, resources = to_gpu(index, factory)
    apply_search_params(index, {"nprobe": nprobe} if factory.startswith("IVF") else None)
    ids, seconds = _timed_search(index, queries, 10)
    del index, resources
    return {"build_s": round(build_s, 2), "built_on_gpu": built_on_gpu,
            "search_ms_per_query": round(1000 * seconds / len(queries), 4), "ids": ids}


def faiss_gpu(cfg: dict, work: Path, device: str) -> dict:
    """Flat and IVF built and searched on the GPU against the same indexes on the CPU."""
    on_gpu = device == "cuda"
    if on_gpu and not (hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0):
        raise Skip("faiss has no GPU support here (faiss-cpu installed): pip install '.[gpu]' "
                   "(faiss-gpu-cu12) and pip uninstall faiss-cpu")
    vectors = synthetic_vectors(cfg["n"], cfg["dim"], seed=0)
    queries = heldout_queries(vectors, cfg["queries"])
    truth = exact_topk(vectors, queries, 10)
    rows = []
    for factory in ("Flat", f"IVF{ivf_nlist(cfg['n'])},Flat"):
        row = {"factory": factory}
        try:
            cpu = _index_side(vectors, queries, factory, False, cfg["nprobe"])
            dev = _index_side(vectors, queries, factory, on_gpu, cfg["nprobe"])
        except RuntimeError as exc:  # one structure failing on the device must not hide the other
            rows.append({**row, "error": str(exc)[:500]})
            continue
        for side, result in (("cpu", cpu), ("device", dev)):
            row.update({f"{side}_{k}": v for k, v in result.items() if k != "ids"})
            row[f"{side}_recall_at_10"] = round(recall_at_k(result["ids"], truth), 4)
        row["same_ids"] = round(float((cpu["ids"] == dev["ids"]).mean()), 5)
        rows.append(row)
    return {"n": cfg["n"], "dim": cfg["dim"], "queries": cfg["queries"], "nprobe": cfg["nprobe"],
            "device_side": "gpu" if on_gpu else "cpu (dry run)", "rows": rows}


def service(cfg: dict, work: Path, device: str) -> dict:
    """perf/serving.py: the real server on a shapes-world index, driven at each concurrency."""
    import serving  # noqa: PLC0415 - heavy, see above

    out = work / "serving.json"
    code = serving.main(["--model", cfg["model"], "--device", device, "--requests", str(cfg["requests"]),
                         "--concurrency", cfg["concurrency"], "--gallery-size", str(cfg["gallery"]),
                         "--workdir", str(work / "serving"), "--json", str(out)])
    result = json.loads(out.read_text())
    if code != 0:
        raise RuntimeError(f"requests failed: {[(r['concurrency'], r['errors']) for r in result['rows']]}")
    return result


def tat(cfg: dict, work: Path, device: str) -> dict:
    """perf/tat_speed.py: compute-only and `cir train` images/s and steps/s."""
    import tat_speed  # noqa: PLC0415 - heavy, see above

    model = _model(work, cfg["arch"], device)
    data = tat_speed.make_shards(work / "tat_shards", cfg["pairs"])
    compute = tat_speed.compute_only(model, cfg["batch"], cfg["steps"])
    shutil.rmtree(work / "tat_run", ignore_errors=True)
    piped = tat_speed.pipeline(model, data, work / "tat_run", cfg["batch"], cfg["steps"], cfg["workers"])
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    peak = tat_speed.peak_tflops(name)
    bound = peak * 1e12 / (2 * tat_speed.ARCHS[cfg["arch"]][3] * 1e9) if peak else None
    return {"arch": cfg["arch"], "batch": cfg["batch"], "steps": cfg["steps"], "workers": cfg["workers"],
            "compute_images_per_s": round(compute, 1), "compute_steps_per_s": round(compute / cfg["batch"], 3),
            "train_images_per_s": round(piped, 1), "train_steps_per_s": round(piped / cfg["batch"], 3),
            "pipeline_over_compute": round(piped / compute, 3),
            "share_of_bound": round(compute / bound, 3) if bound else None}


def _docker(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


def docker(cfg: dict, work: Path, device: str, dry: bool) -> dict:
    """Build the CUDA image and check the GPU from inside a container."""
    if shutil.which("docker") is None:
        raise Skip("no docker command on this machine")
    info = _docker("info", "--format", "{{json .Runtimes}}", timeout=30)
    if info.returncode != 0:
        raise Skip(f"the Docker daemon does not answer: {info.stderr.strip()[:200]}")
    if "nvidia" not in info.stdout:
        raise Skip("Docker has no NVIDIA runtime (install nvidia-container-toolkit)")
    if dry:
        raise Skip("dry run: the CUDA image is only built on a GPU host")
    tag = "cir:gpu-suite"
    build = _docker("build", "-f", str(REPO / "docker" / "Dockerfile.gpu"), "-t", tag, str(REPO),
                    timeout=cfg["budget_s"] - 15)
    if build.returncode != 0:
        raise RuntimeError(f"docker build failed: {build.stderr.strip()[-800:]}")
    smi = _docker("run", "--rm", "--gpus", "all", "--entrypoint", "nvidia-smi", tag, "-L", timeout=60)
    check = _docker("run", "--rm", "--gpus", "all", "--entrypoint", "python", tag, "-c",
                    "import torch; print(torch.cuda.is_available(), torch.cuda.get_device_name(0))", timeout=60)
    ok = smi.returncode == 0 and check.stdout.startswith("True")
    if not ok:
        raise RuntimeError(f"GPU not visible in the container: {smi.stderr.strip()[:300]} {check.stderr.strip()[:300]}")
    return {"image": tag, "nvidia_smi": smi.stdout.strip(), "torch_cuda": check.stdout.strip()}


def run_section(name: str, cfg: dict, work: Path, device: str, dry: bool) -> dict:
    """The child process: one section; a Skip becomes a 'skipped' result."""
    functions = {"throughput": throughput, "indexer": indexer, "faiss": faiss_gpu, "service": service, "tat": tat}
    try:
        if name == "docker":
            return docker(cfg, work, device, dry)
        return functions[name](cfg, work, device)
    except Skip as exc:
        return {"status": "skipped", "reason": str(exc)}


def main(argv: list[str] | None = None) -> int:
    """The child process of perf/gpu_suite.py: run one section, write its result."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--part", choices=SECTIONS, required=True)
    p.add_argument("--result", required=True)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--dry", action="store_true")
    args = p.parse_args(argv)
    mode, device = ("dry", "cpu") if args.dry else ("full", "cuda")
    write_result(args.result, run_section(args.part, SIZES[mode][args.part], args.work, device, args.dry))
    return 0


if __name__ == "__main__":
    sys.exit(main())
