"""A real Milvus standalone server (the `milvus` wheel), started once per test session.

On CI (CI=true) a server that cannot start fails the Milvus tests with the reason; elsewhere
they skip with it. Tests get a `MilvusServer` with its URL maker and restart/kill for fault tests.
"""

from __future__ import annotations

import itertools
import os
import signal
from dataclasses import dataclass

import pytest

_names = itertools.count()


def unavailable(reason: str):
    """Fail on CI, skip elsewhere: the Milvus tests never pass quietly without a server."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"Milvus tests cannot run on CI: {reason}", pytrace=False)
    pytest.skip(f"no Milvus server: {reason}")


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
