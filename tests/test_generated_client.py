"""A Python client generated from /openapi.json (openapi-python-client, offline) runs an image search,
a filtered search, and pages: the schema is the routes' real contract."""

from __future__ import annotations

import importlib
import io
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from service_fixtures import live_server, world_index  # noqa: F401 - fixtures

GENERATOR = shutil.which("openapi-python-client") or str(Path(sys.executable).parent / "openapi-python-client")
if not Path(GENERATOR).is_file():
    pytest.skip("openapi-python-client is not installed (pip install -e '.[dev]')", allow_module_level=True)


@pytest.fixture(scope="module")
def generated(live_server, tmp_path_factory):
    import httpx

    base = tmp_path_factory.mktemp("generated")
    (base / "openapi.json").write_bytes(httpx.get(live_server.url + "/openapi.json").content)
    (base / "config.yaml").write_text("post_hooks: []\n")  # no formatter run: offline and quick
    out = base / "cir_generated"
    run = subprocess.run([GENERATOR, "generate", "--path", str(base / "openapi.json"), "--output-path", str(out),
                          "--meta", "none", "--config", str(base / "config.yaml")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    sys.path.insert(0, str(base))
    try:
        yield importlib.import_module("cir_generated")
    finally:
        sys.path.remove(str(base))
        for name in [m for m in sys.modules if m.split(".")[0] == "cir_generated"]:
            del sys.modules[name]


def _api(package, name: str):
    return importlib.import_module(f"{package.__name__}.{name}")


def test_generated_client_searches_filters_and_pages(generated, live_server, world_index):
    search = _api(generated, "api.search.search_search_post")
    models = _api(generated, "models")
    types = _api(generated, "types")
    client = generated.Client(base_url=live_server.url, raise_on_unexpected_status=True)
    ids, paths = world_index["ids"], world_index["paths"]

    image = types.File(payload=io.BytesIO(paths[ids[4]].read_bytes()), file_name="q.png", mime_type="image/png")
    answer = search.sync(client=client, body=models.SearchForm(image=[image], text="make it blue", k=5))
    assert isinstance(answer, models.SearchResponse), answer
    assert len(answer.results) == 5 and answer.next_offset == 5 and ids[4] not in [h.id for h in answer.results]

    flt = models.SearchJSONFilter.from_dict({"colour": {"nin": ["red"]}, "not": {"shape": "star"}})
    filtered = search.sync(client=client, body=models.SearchJSON(text="a shape", k=8, filter_=flt))
    assert isinstance(filtered, models.SearchResponse), filtered
    meta = [h.metadata.additional_properties for h in filtered.results]
    assert meta and all(m["colour"] != "red" and m["shape"] != "star" for m in meta)

    seen, offset = [], 0
    while not isinstance(offset, (type(None), types.Unset)):
        page = search.sync(client=client, body=models.SearchJSON(text="a shape", k=20, offset=offset))
        seen += [h.id for h in page.results]
        offset = page.next_offset
    assert len(seen) == len(set(seen)) == len(ids)

    bad = search.sync_detailed(client=client, body=models.SearchJSON(text="x", k=1000, offset=9500))
    assert bad.status_code == 422 and isinstance(bad.parsed, models.ErrorBody)
