"""The ONNX Runtime encoder: both towers of a loaded Encoder exported once, cached by fingerprint, run on the CPU.

`onnx_encoder(encoder)` exports the image and text towers of a loaded (adapter already merged)
`cir.encoder.Encoder` with the TorchScript-based ONNX exporter (no onnxscript needed, seconds
rather than minutes on a CPU), checks the export against the torch towers on probe inputs
(cosine >= 0.9999, another batch size than the traced one), and caches it in
CACHE/<fingerprint>/: written to a temporary folder, renamed into place when complete, and
verified on every later load (format, fingerprint, sha256 of each file); a partial, corrupt or
foreign cache entry is rebuilt. The returned `OnnxEncoder` is an `Encoder` (same preprocessing,
tokenizer, dim and fingerprint) whose `encode_pixels` / `encode_texts` run InferenceSessions on
the CPU execution provider; the torch model is dropped once the sessions exist.

The fingerprint stays the model's: the runtime changes float rounding (embeddings agree within
cosine 0.9999), not which model an index belongs to, so indexes are served by either runtime.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort
import torch
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state
from PIL import Image

from cir.encoder import FEATURES, Encoder
from cir.fusion import l2_normalize
from cir.io import atomic_write_json, replace_dir
from cir.models import ModelLoadError

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the exported graphs change meaning: older cache entries are then rebuilt
OPSET = 17
IMAGE_FILE, TEXT_FILE, META_FILE = "image.onnx", "text.onnx", "meta.json"
PIXELS, OUTPUT = "pixel_values", "features"
MIN_COSINE = 0.9999
# Two texts of different lengths, so the traced text graph sees padding (and masks it).
TRACE_TEXTS = ("a photo", "a photo of a big red circle to the left of two small striped blue squares")
CHECK_TEXTS = ("make it blue", "a", "turn the dress into a red shirt with two dogs on the left and a circle")
# ONNX Runtime's Python errors derive from Exception only.
ORT_ERRORS = (ort_state.Fail, ort_state.InvalidGraph, ort_state.InvalidArgument, ort_state.NoSuchFile,
              ort_state.InvalidProtobuf, ort_state.RuntimeException)


class OnnxExportError(ModelLoadError):
    """The encoder cannot be exported to, or run in, ONNX Runtime."""


def default_cache_dir() -> Path:
    """Where exports are cached unless told otherwise: $XDG_CACHE_HOME/cir/onnx (~/.cache/cir/onnx)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cir" / "onnx"


@dataclass
class OnnxEncoder(Encoder):
    """An Encoder whose towers run in ONNX Runtime (CPU); `model` is None (no torch weights are kept)."""

    image_session: object = None
    text_session: object = None
    text_inputs: tuple = ()
    export_dir: str = ""
    threads: int = 1

    def encode_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        """Embed a preprocessed (N, 3, H, W) batch; unit float32 rows."""
        feeds = {PIXELS: np.ascontiguousarray(pixels.detach().cpu().numpy(), dtype=np.float32)}
        return l2_normalize(self.image_session.run([OUTPUT], feeds)[0].astype(np.float32, copy=False))

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Embed raw texts (no prompt template) in batches; unit float32 rows."""
        chunks = []
        for i in range(0, len(texts), batch_size):
            tokens = self.tokenize(texts[i : i + batch_size])
            feeds = {name: tokens[name].numpy() for name in self.text_inputs}
            chunks.append(l2_normalize(self.text_session.run([OUTPUT], feeds)[0].astype(np.float32, copy=False)))
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), np.float32)

    def info(self) -> dict:
        """The Encoder's identity plus the runtime, its threads and the export folder."""
        return {**super().info(), "runtime": "onnx", "threads": self.threads, "onnx_dir": self.export_dir}


class _Tower(torch.nn.Module):
    """One tower as a module of positional tensors, which is what the exporter traces."""

    def __init__(self, model: torch.nn.Module, features, names: Sequence[str]):
        super().__init__()
        # features: the family's recipe from cir.encoder.FEATURES (e.g. BLIP's ITC projections)
        self.model, self.features, self.names = model, features, tuple(names)

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.features(self.model, dict(zip(self.names, tensors)))


def _probe_pixels(encoder: Encoder, count: int) -> torch.Tensor:
    rng = np.random.default_rng(count)
    images = [Image.fromarray(rng.integers(0, 256, (48 + 16 * i, 64, 3), dtype=np.uint8)) for i in range(count)]
    pixels = encoder.preprocess.batch(images)
    if not isinstance(pixels, torch.Tensor):
        raise OnnxExportError(f"{encoder.name}: its preprocessing gives {type(pixels).__name__} inputs (variable-"
                              "resolution NaFlex models), which the ONNX runtime does not export; use runtime torch")
    return pixels


def _export(encoder: Encoder, folder: Path) -> list[str]:
    """Write both towers' ONNX graphs into `folder`; returns the text graph's input names."""
    pixels, tokens = _probe_pixels(encoder, 2), encoder.tokenize(list(TRACE_TEXTS))
    names = [k for k in tokens if k != "token_type_ids"]  # what Encoder.encode_texts feeds the text tower
    image_features, text_features = FEATURES[encoder.family.features]
    towers = [(_Tower(encoder.model, image_features, [PIXELS]), (pixels,), IMAGE_FILE,
               {PIXELS: {0: "batch"}, OUTPUT: {0: "batch"}}),
              (_Tower(encoder.model, text_features, names), tuple(tokens[n] for n in names), TEXT_FILE,
               {**{n: {0: "batch", 1: "sequence"} for n in names}, OUTPUT: {0: "batch"}})]
    for tower, args, filename, axes in towers:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            # The tracer warns at each Python branch on a shape; _check below proves the graphs right.
            warnings.simplefilter("ignore")
            torch.onnx.export(tower.eval(), args, str(folder / filename), input_names=list(tower.names),
                              output_names=[OUTPUT], dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    return names


def _session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _check(encoder: Encoder, candidate: OnnxEncoder) -> float:
    """The lowest cosine between torch and ONNX embeddings on inputs the trace never saw."""
    pixels = _probe_pixels(encoder, 3)
    image = (encoder.encode_pixels(pixels) * candidate.encode_pixels(pixels)).sum(1)
    text = (encoder.encode_texts(list(CHECK_TEXTS)) * candidate.encode_texts(list(CHECK_TEXTS))).sum(1)
    return float(min(image.min(), text.min()))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_meta(folder: Path, fingerprint: str) -> dict | None:
    """The entry's metadata when it is complete and this encoder's; None means rebuild."""
    try:
        meta = json.loads((folder / META_FILE).read_text())
        if meta.get("format") != FORMAT or meta.get("fingerprint") != fingerprint:
            return None
        if all(_sha256(folder / name) == digest for name, digest in meta["files"].items()):
            return meta
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return None


def _make(encoder: Encoder, folder: Path, meta: dict, threads: int, keep_model: bool = False) -> OnnxEncoder:
    fields = {f.name: getattr(encoder, f.name) for f in dataclasses.fields(Encoder) if f.init}
    if not keep_model:
        fields["model"] = None  # the sessions hold the weights; let the torch copy go
    return OnnxEncoder(**fields, image_session=_session(folder / IMAGE_FILE, threads),
                       text_session=_session(folder / TEXT_FILE, threads), text_inputs=tuple(meta["text_inputs"]),
                       export_dir=str(folder), threads=threads)


def _build_entry(encoder: Encoder, cache: Path, threads: int) -> Path:
    """Export into a temporary folder in `cache`, check it, then rename it to CACHE/<fingerprint>."""
    final = cache / encoder.fingerprint
    tmp = Path(tempfile.mkdtemp(prefix=f".{encoder.fingerprint[:16]}.tmp-", dir=cache))
    try:
        start = time.perf_counter()
        names = _export(encoder, tmp)
        meta = {"format": FORMAT, "fingerprint": encoder.fingerprint, "model": encoder.name,
                "adapter": encoder.adapter, "text_inputs": names, "opset": OPSET, "torch": torch.__version__,
                "files": {name: _sha256(tmp / name) for name in (IMAGE_FILE, TEXT_FILE)}}
        cosine = _check(encoder, _make(encoder, tmp, meta, threads, keep_model=True))
        if cosine < MIN_COSINE:
            raise OnnxExportError(f"the ONNX export of {encoder.name} disagrees with torch (cosine {cosine:.6f} "
                                  f"< {MIN_COSINE}); use runtime torch")
        atomic_write_json(tmp / META_FILE, {**meta, "check_cosine": cosine})
        replace_dir(tmp, final)
        log.info("exported the ONNX towers of %s to %s in %.1f s (cosine to torch %.6f)", encoder.name, final,
                 time.perf_counter() - start, cosine)
        return final
    except OnnxExportError:
        raise
    except (RuntimeError, ValueError, TypeError, OSError, *ORT_ERRORS) as exc:
        raise OnnxExportError(f"cannot export {encoder.name} to ONNX: {type(exc).__name__}: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def onnx_encoder(encoder: Encoder, cache_dir: str | Path | None = None, threads: int | None = None) -> OnnxEncoder:
    """The ONNX Runtime twin of a CPU float32 Encoder, from the cached export (made now if missing or bad)."""
    if encoder.device.type != "cpu" or encoder.autocast_dtype is not None:
        raise ValueError("the ONNX runtime exports a float32 encoder on the CPU (load it with device cpu, float32)")
    threads = threads or torch.get_num_threads()
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OnnxExportError(f"cannot create the ONNX cache folder {cache}: {exc}") from exc
    folder = cache / encoder.fingerprint
    meta = _read_meta(folder, encoder.fingerprint)
    if meta is not None:
        try:
            loaded = _make(encoder, folder, meta, threads)
            log.info("using the cached ONNX export %s", folder)
            return loaded
        except ORT_ERRORS as exc:
            log.warning("ONNX Runtime cannot load the cached export %s (%s): rebuilding it", folder, exc)
    elif folder.exists():
        log.warning("ONNX cache entry %s is incomplete, corrupt or not this encoder's: rebuilding it", folder)
    folder = _build_entry(encoder, cache, threads)
    meta = _read_meta(folder, encoder.fingerprint)
    if meta is None:
        raise OnnxExportError(f"the ONNX export in {folder} changed while it was being loaded")
    return _make(encoder, folder, meta, threads)
