"""The ZS-CIR benchmarks: CIRR, CIRCO and FashionIQ loaders, their exact metrics, and `evaluate`.

    from cir.benchmarks import evaluate
    report = evaluate(encoder, "cirr", "data/cirr", fusions=[("slerp", 0.9)])
    report["results"]["slerp@0.90"]["R@1"]

Loaders parse annotations without opening images; images are checked and embedded (through
`cir.pipeline.embed_image_files`, cached by encoder fingerprint) only when evaluating.
"""

from __future__ import annotations

import importlib

# Each public name and the submodule that defines it. Names load on first use (PEP 562), so that
# importing a light submodule (data, config) for a CLI's parser does not pull torch in with the
# ranking and embedding modules.
_EXPORTS = {
    "circo": ("load_circo",),
    "cirr": ("load_cirr",),
    "config": ("EvalConfig", "EvalRun", "PartRun", "fusion_key", "normalize_fusions"),
    "data": ("BENCHMARKS", "DEFAULT_ALPHA", "SPLITS", "TOP_K", "BenchmarkData", "BenchmarkError", "CIRQuery",
             "MissingImagesError", "default_cache_dir"),
    "fashioniq": ("CATEGORIES", "join_captions", "load_fashioniq"),
    "gallery_cache": ("GalleryCache",),
    "gap": ("modality_gap",),
    "loaders": ("load_benchmark", "world_heldout"),
    "metrics": ("circo_average_precision", "circo_metrics", "cirr_metrics", "cirr_subset_ranking",
                "fashioniq_metrics", "recall_at_k", "remove_reference"),
    "ranking": ("rank_gallery", "stable_topk"),
    "runner": ("evaluate", "run_evaluation"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'cir.benchmarks' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"cir.benchmarks.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
