"""A real Milvus standalone server (the `milvus` wheel), started once per test session.

On CI (CI=true) a server that cannot start fails the Milvus tests with the reason; elsewhere
they skip with it. Tests get a `MilvusServer` with its URL maker and restart/kill for fault tests.
"""

from __future__ import annotations

import itertools
import os
import signal
from dataclasses import dataclass

import numpy as np
import pytest

from cir import index_store as store
from cir.columns import build_columns, describe
from cir.fusion import l2_normalize
from cir.metadata import infer_types
from filter_fixtures import random_metadata
from indexer.factory import build_index
from indexer.versions import write_version

DIM = 16
FLAT = {"index_type": "FLAT", "params": {}}

_names = itertools.count()


def unavailable(reason: str):
    """Fail on CI, skip elsewhere: the Milvus tests never pass quietly without a server."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"Milvus tests cannot run on CI: {reason}", pytrace=False)
    pytest.skip(f"no Milvus server: {reason}")


def faiss_version(root, seed: int = 0, n: int = 400, composed: bool = False, version: str = "v000001-test"):
    """A published FAISS Flat version with random unit vectors and random typed metadata."""
    rng = np.random.default_rng(seed)
    emb = l2_normalize(rng.normal(size=(n, DIM)).astype(np.float32))
    ranked = l2_normalize(emb + rng.normal(size=(n, DIM)).astype(np.float32)) if composed else None
    metas = random_metadata(n, seed)
    columns = build_columns(infer_types(enumerate(metas, 1)), metas)
    built = build_index(emb if ranked is None else ranked, "Flat")
    items = [{"id": f"item{i}", "path": f"/gallery/{i}.png", "width": 8, "height": 6, "sha256": f"h{i % 50}",
              "size": 10 + i, "mtime_ns": 1, "metadata": m} for i, m in enumerate(metas)]
    manifest = {"format": 1, "version": version, "dim": DIM, "count": n, "metric": "ip", "factory": built.factory,
                "search_params": built.search_params, "rerank": built.rerank, "fingerprint": "test-fp",
                "model": "toy", "adapter": None, "default_alpha": 0.7, "fields": describe(columns),
                "index_vectors": store.INDEX_VECTORS_FILE if composed else store.EMBEDDINGS_FILE}
    write_version(root, version, emb, items, built.index, manifest, {}, ranked, columns)
    store.IndexRoot(root).publish(version)
    return store.load_version(root, version), emb, (emb if ranked is None else ranked), metas


@dataclass
class MilvusServer:
    """The session's server: `url(name)` is a fresh gallery location on it."""

    server: object
    port: int

    def url(self, prefix: str = "g") -> str:
        """A milvus:// location of a gallery name no other test uses."""
        return f"milvus://127.0.0.1:{self.port}/{prefix}{next(_names)}"

    def kill(self) -> None:
        """kill -9 the Milvus process (no clean shutdown)."""
        proc = self.server.server_proc
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        self.server.stop()

    def start(self) -> None:
        """Start the server again on the same data and port."""
        self.server.listen_port = self.port
        self.server.start()


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory):
    """The running server; stopped at the end of the session."""
    try:
        from milvus import MilvusServer as Server
    except ImportError as exc:
        unavailable(f"the milvus wheel is not installed ({exc}); pip install -e '.[dev]'")
    try:
        import pymilvus  # noqa: F401
    except ImportError as exc:
        unavailable(f"pymilvus is not installed ({exc}); pip install -e '.[dev]'")
    server = Server()
    server.set_base_dir(str(tmp_path_factory.mktemp("milvus")))
    try:
        server.start()
    except Exception as exc:  # noqa: BLE001 - whatever stopped it is the reason to report
        server.stop()
        unavailable(f"the Milvus server did not start: {exc}")
    try:
        yield MilvusServer(server, server.listen_port)
    finally:
        server.stop()
