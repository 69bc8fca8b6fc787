"""A real Milvus standalone server (the `milvus` wheel), started once per test session.

On CI (CI=true) a server that cannot start fails the Milvus tests with the reason; elsewhere
they skip with it. Tests get a `MilvusServer` with its URL maker and restart/kill for fault tests.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import threading
from dataclasses import dataclass

import numpy as np
import pytest

from cir import index_store as store
from cir.columns import build_columns, describe
from cir.fusion import l2_normalize
from cir.metadata import infer_types
from filter_fixtures import random_metadata
from indexer.factory import build_index
from cir.versioning import write_version

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


class Forwarder:
    """A TCP relay on a fixed port to the server's current port.

    A restarted Milvus may have to take another port (the old one lingers in TIME_WAIT after a
    kill -9); clients keep dialling this one, as they keep dialling a cluster's load balancer.
    """

    def __init__(self, target: int):
        self.target = target
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=2)
            except OSError:
                client.close()  # Milvus is down: the client sees a refused connection
                continue
            upstream.settimeout(None)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def close(self) -> None:
        self.sock.close()


@dataclass
class MilvusServer:
    """The session's server: `url(name)` is a fresh gallery location on it."""

    server: object
    forwarder: Forwarder

    @property
    def port(self) -> int:
        """The port clients dial (the relay's)."""
        return self.forwarder.port

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
        """Start the server again on the same data (its port may change; the relay follows it)."""
        self.server.start()
        self.forwarder.target = self.server.listen_port


ETCD_PEER_PORT = 2380  # fixed in the milvus wheel's embedded etcd


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


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
    if not _free(ETCD_PEER_PORT):
        unavailable(f"port {ETCD_PEER_PORT} is taken: another Milvus wheel server runs on this host (its embedded "
                    "etcd always takes that port, so one such server per host)")
    server = Server()
    # A kill -9 leaves the dead process's sessions in etcd; the restart waits for them to expire
    # (30 s by default). The fault tests restart twice: a short lease keeps them quick.
    server.config.set("common.session.ttl", 5)
    server.set_base_dir(str(tmp_path_factory.mktemp("milvus")))
    for attempt in (1, 2):  # the wheel picks free ports, then binds them: another server may win the race
        try:
            server.start()
            break
        except Exception as exc:  # noqa: BLE001 - whatever stopped it is the reason to report
            server.stop()
            if attempt == 2:
                unavailable(f"the Milvus server did not start (twice): {exc}")
    forwarder = Forwarder(server.listen_port)
    try:
        yield MilvusServer(server, forwarder)
    finally:
        forwarder.close()
        server.stop()
