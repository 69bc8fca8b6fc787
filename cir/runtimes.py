"""Encoder runtimes: PyTorch (the default) or ONNX Runtime on the CPU, chosen with `--runtime`.

This module imports neither torch nor onnxruntime, so configs and CLIs can validate a runtime
before anything heavy loads. Both runtimes give the same encoder interface (cir.encoder.Encoder)
and the same fingerprint: an index built with one is served by the other.
"""

from __future__ import annotations

from pathlib import Path

RUNTIMES = ("torch", "onnx")
DEFAULT_RUNTIME = "torch"
_FP32 = ("auto", "float32", "fp32")


def check_runtime(runtime: str, device: str = "auto", dtype: str = "auto") -> None:
    """Raise ValueError for an unknown runtime or a device/dtype the runtime cannot honour."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose {' or '.join(RUNTIMES)}")
    if runtime == "onnx" and device not in ("auto", "cpu"):
        raise ValueError(f"runtime onnx runs on the CPU, not on device {device!r}: use device cpu (or auto), "
                         "or runtime torch for the GPU")
    if runtime == "onnx" and dtype not in _FP32:
        raise ValueError(f"runtime onnx computes in float32, not {dtype!r}: use dtype auto or float32")


def load_runtime_encoder(model: str, adapter: str | Path | None = None, device: str = "auto",
                         dtype: str = "auto", runtime: str = DEFAULT_RUNTIME,
                         onnx_cache: str | Path | None = None, threads: int | None = None):
    """Load an encoder for `runtime`: cir.encoder.load_encoder, or its ONNX Runtime twin (exported once, cached)."""
    check_runtime(runtime, device, dtype)
    # torch/transformers are heavy and onnxruntime optional: imported when an encoder loads, not with this module.
    from cir.encoder import load_encoder
    from cir.models import ModelLoadError

    if runtime == "torch":
        return load_encoder(model, adapter, device=device, dtype=dtype)
    try:
        from cir.onnx_runtime import onnx_encoder
    except ImportError as exc:
        raise ModelLoadError(f"runtime onnx needs onnx and onnxruntime ({exc}): pip install 'cir[onnx]'") from exc
    return onnx_encoder(load_encoder(model, adapter, device="cpu", dtype="float32"), onnx_cache, threads)
