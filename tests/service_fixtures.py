"""Fixtures for the service tests: a shapes-world index built once, and a live uvicorn server.

The index is built with the real indexer CLI over a small shapes-world gallery (the `toy`
model when it is installed, else a tiny random CLIP). Test modules import these fixtures;
the expensive builds are cached per session in `_CACHE`, so importing them in several
modules costs nothing extra.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn

from cir.index_store import IndexRoot
from cir.models import toy_model_dir
from cir.toyworld import generate_world
from indexer.cli import main as index_main
from service.app import create_app
from service.server import uvicorn_config
from service.settings import Settings
from tiny_models import make_tiny_clip

API_KEY = "test-key"
GALLERY_SIZE = 48
_CACHE: dict[str, object] = {}


def _model(base: Path) -> str:
    if (toy_model_dir() / "config.json").is_file():
        return "toy"
    return str(make_tiny_clip(base / "tiny_clip"))


def build_world_index(base: Path) -> dict:
    """A shapes-world gallery (with attribute metadata) and an index root over it."""
    world = base / "world"
    generate_world(world, seed=0, gallery_size=GALLERY_SIZE, n_queries=4, n_captions=4, progress=False)
    manifest = world / "gallery_manifest.jsonl"
    with open(world / "gallery.jsonl") as src, open(manifest, "w") as out:
        for line in src:
            row = json.loads(line)
            out.write(json.dumps({"path": f"circo/COCO2017_unlabeled/unlabeled2017/{row['file_name']}",
                                  "id": row["cirr_name"], **row["attributes"]}) + "\n")
    model = _model(base)
    root = base / "index"
    rc = index_main(["build", "--gallery", str(manifest), "--model", model, "--out", str(root),
                     "--workers", "0", "--factory", "Flat", "--no-progress", "--alpha", "0.75"])
    assert rc == 0, "indexer build failed"
    version = IndexRoot(root).current_version()
    ids = [json.loads(line)["id"] for line in open(manifest)]
    paths = {i: world / json.loads(line)["path"] for i, line in zip(ids, open(manifest))}
    return {"root": root, "model": model, "version": version, "ids": ids, "paths": paths, "world": world}


@pytest.fixture(scope="session")
def world_index(tmp_path_factory) -> dict:
    """Built once per session: {'root', 'model', 'version', 'ids', 'paths', 'world'}."""
    if "world_index" not in _CACHE:
        _CACHE["world_index"] = build_world_index(tmp_path_factory.mktemp("service_world"))
    return _CACHE["world_index"]  # type: ignore[return-value]


RICH_SIZE = 16
HOSTILE_FIELD = "na'me\"; DROP TABLE items;--"
BRANDS = ["acme", "O'Brien", "Robert'); DROP TABLE items;--", "ünïcødé ✓"]
TAG_SETS = [["sale"], ["new"], ["sale", "new"], [], ["eco"]]


def rich_metadata(i: int, attributes: dict) -> dict:
    """Item i's metadata of every type (string, number, boolean, date, tags, object), some absent."""
    meta = {"colour": attributes["colour"], "price": [5, 12.5, 20, 49.99, 50, 99][i % 6] + i,
            "in_stock": i % 3 != 0, "added": f"2024-{i % 12 + 1:02d}-15", "tags": TAG_SETS[i % 5],
            "brand": BRANDS[i % 4], HOSTILE_FIELD: "yes" if i % 2 else "no", "spec": {"sku": i}}
    if i % 7 == 6:
        del meta["price"], meta["added"]
    return meta


def build_rich_index(base: Path, world_index: dict) -> dict:
    """A small index over world renders whose manifest has every metadata type and hostile names/values."""
    attrs = {json.loads(line)["cirr_name"]: json.loads(line)["attributes"]
             for line in open(world_index["world"] / "gallery.jsonl")}
    ids = [i for i in world_index["ids"] if i in attrs][:RICH_SIZE]
    rows = [{"path": str(world_index["paths"][item_id]), "id": f"r{n:02d}", **rich_metadata(n, attrs[item_id])}
            for n, item_id in enumerate(ids)]
    manifest = base / "rich.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    root = base / "rich_index"
    rc = index_main(["build", "--gallery", str(manifest), "--model", world_index["model"], "--out", str(root),
                     "--workers", "0", "--factory", "Flat", "--no-progress", "--alpha", "0.75"])
    assert rc == 0, "indexer build failed"
    return {"root": root, "model": world_index["model"], "version": IndexRoot(root).current_version(),
            "ids": [r["id"] for r in rows], "metadata": {r["id"]: {k: v for k, v in r.items() if k not in ("path", "id")}
                                                          for r in rows},
            "paths": {r["id"]: Path(r["path"]) for r in rows}}


@pytest.fixture(scope="session")
def rich_index(world_index, tmp_path_factory) -> dict:
    """Built once per session: {'root', 'model', 'version', 'ids', 'metadata', 'paths'}."""
    if "rich_index" not in _CACHE:
        _CACHE["rich_index"] = build_rich_index(tmp_path_factory.mktemp("rich"), world_index)
    return _CACHE["rich_index"]  # type: ignore[return-value]


@pytest.fixture(scope="session")
def rich_server(rich_index) -> "LiveServer":
    """A server over the rich index (read-only tests)."""
    if "rich_server" not in _CACHE:
        _CACHE["rich_server"] = LiveServer(server_settings(rich_index["root"])).__enter__()
    yield _CACHE["rich_server"]
    server = _CACHE.pop("rich_server", None)
    if server is not None:
        server.__exit__(None, None, None)


def copy_root(world_index: dict, dest: Path) -> Path:
    """A private copy of the index root (for tests that publish versions), without the session server's
    live state (ROOT/live: its writer lock)."""
    shutil.copytree(world_index["root"], dest, ignore=shutil.ignore_patterns("live"))
    return dest


def publish_copy(root: Path, version: str, new_version: str) -> None:
    """Publish a copy of `version` under a new name (what a rebuild of the same gallery looks like)."""
    store = IndexRoot(root)
    shutil.copytree(store.version_dir(version), store.version_dir(new_version))
    manifest_path = store.version_dir(new_version) / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["version"] = new_version
    manifest_path.write_text(json.dumps(manifest))
    store.publish(new_version)


class LiveServer:
    """The real app under uvicorn on a free port, in a thread (lifespan included)."""

    def __init__(self, settings: Settings, app=None):
        self.settings = settings
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        # the same server configuration as `cir serve` (connection limits included)
        config = uvicorn_config(app or create_app(settings), settings, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.server.run(sockets=[self.sock])
        except SystemExit:  # uvicorn's answer to a failed lifespan start-up
            pass

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.time() + 120
        while not self.server.started:
            if not self.thread.is_alive() or time.time() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


class IsolatedSettings(Settings):
    """Settings from keyword arguments only: a CIR_* variable in the test environment changes nothing."""

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, **sources):
        return (init_settings,)


def server_settings(root: Path, **overrides) -> Settings:
    """Settings for test servers: small limits so the bad-input tests stay cheap."""
    values = dict(index=root, api_key=API_KEY, max_upload_mb=0.25, max_pixels=1_000_000,
                  reload_interval_s=0.2, max_batch=16, batch_wait_ms=5, decode_workers=2)
    values.update(overrides)
    return IsolatedSettings(**values)


@pytest.fixture(scope="session")
def live_server(world_index) -> LiveServer:
    """One server over the session index (read-only tests only: nothing publishes into it)."""
    if "live_server" not in _CACHE:
        _CACHE["live_server"] = LiveServer(server_settings(world_index["root"])).__enter__()
    yield _CACHE["live_server"]
    server = _CACHE.pop("live_server", None)  # several modules share it; the first teardown stops it
    if server is not None:
        server.__exit__(None, None, None)


@pytest.fixture(scope="module")
def client(live_server):
    """An HTTP client of the shared server."""
    with httpx.Client(base_url=live_server.url, timeout=60) as c:
        yield c


def png_bytes(path: Path) -> bytes:
    """The bytes of a gallery image file."""
    return Path(path).read_bytes()
