"""FAISS factory strings CIR builds and reads, parsed in one place (no faiss import).

    Flat | HNSW<M>[,Flat] | IVF<nlist>,Flat | IVF<nlist>,PQ<m>[x<bits>][fs]

The indexer sizes, trains and tunes an index from the parsed form, the index store decides
from it what may be memory-mapped or moved to a GPU, and the build config validates with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

KINDS = ("Flat", "HNSW", "IVF")
_SYNTAX = re.compile(r"^(?:(Flat)|HNSW(\d+)(?:,Flat)?|IVF(\d+),(?:(Flat)|PQ(\d+)(?:x(\d+))?(fs)?))$")
FORMS = "Flat, HNSW<M>, IVF<nlist>,Flat or IVF<nlist>,PQ<m>[x<bits>][fs]"


@dataclass(frozen=True)
class FactorySpec:
    """A parsed factory string: its kind and the numbers in it."""

    text: str
    kind: str  # Flat, HNSW or IVF
    hnsw_m: int | None = None  # HNSW: neighbours per node
    nlist: int | None = None  # IVF: coarse lists
    pq_m: int | None = None  # IVF,PQ: sub-quantizers (None: IVF,Flat)
    pq_bits: int = 8
    fast_scan: bool = False  # the "fs" (4-bit fast-scan) PQ layout

    @property
    def pq(self) -> bool:
        """True when the vectors are PQ codes (candidates need an exact re-score)."""
        return self.pq_m is not None

    def code_bytes(self, dim: int) -> int:
        """Bytes stored per vector by the index's codes."""
        return self.pq_m * self.pq_bits // 8 if self.pq else dim * 4


def parse_factory(text: str) -> FactorySpec:
    """Parse a factory string CIR supports, or raise ValueError naming the accepted forms."""
    m = _SYNTAX.match(text)
    if m is None:
        raise ValueError(f"unsupported FAISS factory {text!r}; use {FORMS}")
    flat, hnsw_m, nlist, _ivf_flat, pq_m, bits, fs = m.groups()
    if flat:
        return FactorySpec(text, "Flat")
    if hnsw_m:
        return FactorySpec(text, "HNSW", hnsw_m=int(hnsw_m))
    return FactorySpec(text, "IVF", nlist=int(nlist), pq_m=int(pq_m) if pq_m else None,
                       pq_bits=int(bits) if bits else 8, fast_scan=bool(fs))


def factory_kind(text: str) -> str | None:
    """The kind (Flat, HNSW, IVF) of a recorded factory string, None for one CIR does not build."""
    try:
        return parse_factory(text).kind
    except ValueError:
        return None
