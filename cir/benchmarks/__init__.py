"""The ZS-CIR benchmarks: CIRR, CIRCO and FashionIQ loaders, their exact metrics, and `evaluate`.

    from cir.benchmarks import evaluate
    report = evaluate(encoder, "cirr", "data/cirr", fusions=[("slerp", 0.9)])
    report["results"]["slerp@0.90"]["R@1"]

Loaders parse annotations without opening images; images are checked and embedded (through
`cir.pipeline.embed_image_files`, cached by encoder fingerprint) only when evaluating.
"""

from cir.benchmarks.circo import load_circo
from cir.benchmarks.cirr import load_cirr
from cir.benchmarks.data import (BENCHMARKS, DEFAULT_ALPHA, SPLITS, TOP_K, BenchmarkData, BenchmarkError,
                                 CIRQuery, MissingImagesError)
from cir.benchmarks.fashioniq import CATEGORIES, join_captions, load_fashioniq
from cir.benchmarks.gallery_cache import GalleryCache, default_cache_dir
from cir.benchmarks.loaders import load_benchmark, world_heldout
from cir.benchmarks.metrics import (circo_average_precision, circo_metrics, cirr_metrics, cirr_subset_ranking,
                                    fashioniq_metrics, recall_at_k, remove_reference)
from cir.benchmarks.ranking import rank_gallery, stable_topk
from cir.benchmarks.runner import EvalConfig, EvalRun, PartRun, evaluate, fusion_key, run_evaluation

__all__ = [
    "BENCHMARKS", "CATEGORIES", "DEFAULT_ALPHA", "SPLITS", "TOP_K", "BenchmarkData", "BenchmarkError", "CIRQuery",
    "EvalConfig", "EvalRun", "GalleryCache", "MissingImagesError", "PartRun", "circo_average_precision",
    "circo_metrics", "cirr_metrics", "cirr_subset_ranking", "default_cache_dir", "evaluate", "fashioniq_metrics",
    "fusion_key", "join_captions", "load_benchmark", "load_circo", "load_cirr", "load_fashioniq", "rank_gallery",
    "recall_at_k", "remove_reference", "run_evaluation", "stable_topk", "world_heldout",
]
