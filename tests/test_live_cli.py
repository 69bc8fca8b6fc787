"""`cir index apply` and `cir index compact`, and what builds and rollbacks do with pending live changes."""

from __future__ import annotations

import json
import time

import httpx
import numpy as np
from service_fixtures import API_KEY, LiveServer, copy_root, server_settings, world_index  # noqa: F401

from cir.index_store import IndexRoot
from cir.stores import FaissRootStore
from indexer.cli import main


def write_changes(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_apply_then_compact(world_index, tmp_path, capsys):  # noqa: F811
    root = copy_root(world_index, tmp_path / "root")
    ids, paths = world_index["ids"], world_index["paths"]
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "new.png").write_bytes(paths[ids[3]].read_bytes())
    changes = tmp_path / "changes.jsonl"
    write_changes(changes, [{"op": "upsert", "id": "sku-1", "image": "img/new.png", "metadata": {"colour": "jade"}},
                            {"op": "patch", "id": ids[0], "metadata": {"colour": "rust"}},
                            {"op": "delete", "id": ids[1]},
                            {"op": "upsert", "id": "bad", "image": "img/missing.png"},
                            {"op": "patch", "id": ids[2], "metadata": {"colour": 7}},
                            {"op": "upsert", "id": ids[5], "metadata": {"colour": "sand"}}])
    assert main(["apply", str(root), str(changes), "--device", "cpu"]) == 1
    out, err = capsys.readouterr()
    assert "applied 4 changes" in out
    assert f"{changes}:4: bad:" in err and f"{changes}:5:" in err and "'colour'" in err
    view = FaissRootStore(root).open()
    assert view.item("sku-1")["metadata"] == {"colour": "jade"} and view.item(ids[1]) is None
    assert view.item(ids[0])["metadata"]["colour"] == "rust" and view.item(ids[5])["metadata"] == {"colour": "sand"}
    # the same image embedded by apply and by the build: the new item finds itself and its twin first
    _, found = view.search(view.embedding("sku-1")[None], 2)
    assert set(found[0]) == {"sku-1", ids[3]}
    np.testing.assert_allclose(view.embedding("sku-1"), view.embedding(ids[3]), atol=1e-5)
    before = IndexRoot(root).current_version()
    assert main(["compact", str(root), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "compacted" and result["folded"] == 4 and result["previous"] == before
    view = FaissRootStore(root).open()
    assert view.version == result["version"] and not view.changed and view.count == 48
    assert view.item("sku-1")["metadata"] == {"colour": "jade"} and view.item(ids[1]) is None
    assert main(["compact", str(root)]) == 0 and "nothing to compact" in capsys.readouterr().out


def test_build_refuses_pending_changes_and_rollback_hides_them(world_index, tmp_path, capsys):  # noqa: F811
    root = copy_root(world_index, tmp_path / "root")
    first = IndexRoot(root).current_version()
    changes = tmp_path / "changes.jsonl"
    write_changes(changes, [{"op": "delete", "id": world_index["ids"][0]}])
    assert main(["apply", str(root), str(changes)]) == 0
    gallery = world_index["world"] / "gallery_manifest.jsonl"
    args = ["build", "--gallery", str(gallery), "--model", world_index["model"], "--out", str(root), "--workers", "0",
            "--factory", "Flat", "--no-progress", "--force-new"]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "1 live changes" in err and "--discard-live-changes" in err and "cir index compact" in err
    assert IndexRoot(root).current_version() == first
    # a rollback to a version before the changes hides them; publishing their version again brings them back
    assert main(["compact", str(root)]) == 0
    compacted = IndexRoot(root).current_version()
    write_changes(changes, [{"op": "delete", "id": world_index["ids"][1]}])
    assert main(["apply", str(root), str(changes)]) == 0
    capsys.readouterr()
    assert main(["publish", str(root), first]) == 0
    assert "1 live changes written on" in capsys.readouterr().err
    view = FaissRootStore(root).open()
    assert view.count == 48 and view.item(world_index["ids"][0]) is not None
    assert main(["publish", str(root), compacted]) == 0
    view = FaissRootStore(root).open()
    assert view.count == 46 and view.item(world_index["ids"][1]) is None
    assert main([*args, "--discard-live-changes"]) == 0
    view = FaissRootStore(root).open()
    assert view.count == 48 and not view.changed
    assert list((root / "live").glob("discarded-*.log"))


def test_apply_next_to_a_running_writer_server(world_index, tmp_path):  # noqa: F811
    root = copy_root(world_index, tmp_path / "root")
    changes = tmp_path / "changes.jsonl"
    with LiveServer(server_settings(root, compact_pending=0, compact_age_s=0)) as srv, \
            httpx.Client(base_url=srv.url, timeout=60, headers={"X-API-Key": API_KEY}) as c:
        assert c.patch(f"/items/{world_index['ids'][0]}", json={"colour": "first"}).json()["change"] == 1
        write_changes(changes, [{"op": "patch", "id": world_index["ids"][1], "metadata": {"colour": "from-cli"}},
                                {"op": "delete", "id": world_index["ids"][2]}])
        assert main(["apply", str(root), str(changes)]) == 0  # takes turns with the server on the write lock
        deadline = time.time() + 10  # the server follows the log within its reload interval
        while c.get(f"/items/{world_index['ids'][2]}").status_code != 404 and time.time() < deadline:
            time.sleep(0.05)
        assert c.get(f"/items/{world_index['ids'][1]}").json()["metadata"]["colour"] == "from-cli"
        assert c.get(f"/items/{world_index['ids'][2]}").status_code == 404
        assert c.patch(f"/items/{world_index['ids'][3]}", json={"colour": "after"}).json()["change"] == 4
    view = FaissRootStore(root).open()
    assert view.seq == 4 and view.item(world_index["ids"][3])["metadata"]["colour"] == "after"
