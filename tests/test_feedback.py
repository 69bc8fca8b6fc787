"""Search feedback: the log (cir/feedback.py), POST /feedback and query_id, and `cir feedback export`."""

from __future__ import annotations

import json
import os
import signal
import socket
import time

import httpx
import pytest
from cli_process import start_cli
from service_fixtures import LiveServer, rich_index, server_settings, world_index  # noqa: F401 - fixtures

from cir.feedback import UPLOADS, FeedbackLog, export_triplets, read_events, segments
from cir_cli.feedback import main as feedback_main


def _search(client, **fields):
    r = client.post("/search", data=fields)
    assert r.status_code == 200, r.text
    return r.json()


def test_search_has_no_query_id_and_feedback_is_404_when_off(world_index):
    with LiveServer(server_settings(world_index["root"])) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        body = _search(c, reference_id=world_index["ids"][0], text="make it red")
        assert body["query_id"] is None
        r = c.post("/feedback", json={"query_id": "x", "item_id": world_index["ids"][1], "kind": "click"})
        assert r.status_code == 404 and r.json()["error"] == "not_found" and "--feedback-dir" in r.json()["detail"]


def test_feedback_round_trip_and_export(world_index, tmp_path):
    fdir = tmp_path / "fb"
    ids = world_index["ids"]
    settings = server_settings(world_index["root"], feedback_dir=fdir)
    with LiveServer(settings) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        body = _search(c, reference_id=ids[0], text="make it red", filter='{"colour": "red"}')
        qid = body["query_id"]
        assert qid and len(qid) == 32
        target = body["results"][0]["id"]
        r = c.post("/feedback", json={"query_id": qid, "item_id": target, "kind": "click"})
        assert r.status_code == 200 and r.json() == {"status": "logged", "query_id": qid, "item_id": target,
                                                     "kind": "click"}
        assert c.post("/feedback", json={"query_id": qid, "item_id": ids[3], "kind": "skip"}).status_code == 200
        upload = world_index["paths"][ids[2]].read_bytes()
        up = c.post("/search", data={"text": "make it blue"}, files=[("image", ("q.png", upload))]).json()
        assert c.post("/feedback", json={"query_id": up["query_id"], "item_id": ids[4],
                                         "kind": "select"}).status_code == 200
        # bad input: a clear 4xx, never a 500
        assert c.post("/feedback", json={"query_id": "nope", "item_id": ids[1], "kind": "click"}).status_code == 404
        r = c.post("/feedback", json={"query_id": qid, "item_id": "no-such-item", "kind": "click"})
        assert r.status_code == 404 and "no-such-item" in r.json()["detail"]
        for bad in ({"query_id": qid, "item_id": ids[1], "kind": "like"}, {"query_id": qid, "item_id": ids[1]},
                    {"query_id": qid, "item_id": ids[1], "kind": "click", "extra": 1}):
            r = c.post("/feedback", json=bad)
            assert r.status_code == 422 and r.json()["error"] == "invalid_request"
    events = list(read_events(fdir))
    query = next(e for e in events if e["event"] == "query" and e["query_id"] == qid)
    assert query["references"] == [ids[0]] and query["text"] == "make it red" and query["alpha"] == 0.75
    assert query["filter"] == {"colour": {"eq": "red"}} and query["uploads"] == []
    uploaded = next(e for e in events if e["event"] == "query" and e["query_id"] == up["query_id"])
    assert len(uploaded["uploads"][0]) == 64 and not (fdir / UPLOADS / uploaded["uploads"][0]).exists()
    out = tmp_path / "triplets.jsonl"
    assert feedback_main(["export", str(fdir), "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    # the click gives a triplet; the skip does not; the upload was not kept, so its select does not either
    assert [(r["reference"], r["text"], r["target"]) for r in rows] == [(ids[0], "make it red", target)]


def test_kept_uploads_export_as_files(world_index, tmp_path):
    fdir = tmp_path / "fb"
    ids = world_index["ids"]
    with LiveServer(server_settings(world_index["root"], feedback_dir=fdir, feedback_keep_uploads=True)) as srv, \
            httpx.Client(base_url=srv.url, timeout=60) as c:
        data = world_index["paths"][ids[2]].read_bytes()
        body = c.post("/search", data={"text": "make it blue", "reference_id": ids[5]},
                      files=[("image", ("q.png", data))]).json()
        assert c.post("/feedback", json={"query_id": body["query_id"], "item_id": ids[4],
                                         "kind": "select"}).status_code == 200
    counts = export_triplets(fdir, tmp_path / "t.jsonl")
    row = json.loads((tmp_path / "t.jsonl").read_text())
    assert counts["written"] == 1
    assert row["reference"][0] == ids[5] and (tmp_path / "fb" / UPLOADS / os.path.basename(row["reference"][1])
                                              ).read_bytes() == data


def test_feedback_route_needs_the_read_key_when_one_is_set(world_index, tmp_path):
    settings = server_settings(world_index["root"], feedback_dir=tmp_path / "fb")
    object.__setattr__(settings, "read_api_key", __import__("pydantic").SecretStr("reader"))
    with LiveServer(settings) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        r = c.post("/feedback", json={"query_id": "x", "item_id": "y", "kind": "click"})
        assert r.status_code == 401


def test_log_rotates_prunes_by_size_and_age_and_survives_a_torn_line(tmp_path):
    log = FeedbackLog(tmp_path, max_mb=0.01, segment_mb=0.002)
    for i in range(200):
        log.record_query(f"q{i}", references=["a"], uploads=[], text="t" * 20, alpha=0.8, fusion="slerp",
                         filter=None, k=10, index_version="v1", results=["b", "c"])
    log.record_feedback("q199", "b", "click")
    total = sum(p.stat().st_size for p in segments(tmp_path))
    assert len(segments(tmp_path)) > 1 and total <= 0.01 * 2**20 + 0.002 * 2**20
    assert log.knows("q199")
    with pytest.raises(ValueError):
        log.record_feedback("q199", "b", "like")
    log.close()
    with open(segments(tmp_path)[-1], "a") as fh:
        fh.write('{"event": "feedback", "query_')  # a kill -9 in the middle of a line
    events = list(read_events(tmp_path))
    assert events[-1] == {**events[-1], "event": "feedback", "query_id": "q199", "item_id": "b"}
    old = segments(tmp_path)[0]
    stamp = time.time() - 100 * 86400
    os.utime(old, (stamp, stamp))
    again = FeedbackLog(tmp_path, max_age_days=90)  # a restart prunes and remembers the logged queries
    assert not old.exists() and again.knows("q199")
    again.close()


def test_export_cli_errors(tmp_path):
    assert feedback_main(["export", str(tmp_path / "none"), "--out", str(tmp_path / "x.jsonl")]) == 2
    assert feedback_main(["export", str(tmp_path), "--out", str(tmp_path / "x.jsonl"), "--kinds", "like"]) == 2


def test_acknowledged_feedback_survives_kill_9_of_the_server(world_index, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fdir = tmp_path / "fb"
    proc = start_cli(["service", "--index", str(world_index["root"]), "--port", str(port), "--device", "cpu",
                      "--feedback-dir", str(fdir), "--log-level", "warning"], start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 180
        while True:
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.time() < deadline, "the server did not become ready"
            time.sleep(0.2)
        ids = world_index["ids"]
        body = httpx.post(url + "/search", data={"reference_id": ids[0], "text": "make it red"}, timeout=60).json()
        r = httpx.post(url + "/feedback", json={"query_id": body["query_id"], "item_id": ids[7], "kind": "select"},
                       timeout=60)
        assert r.status_code == 200
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    assert export_triplets(fdir, tmp_path / "t.jsonl")["written"] == 1
    assert json.loads((tmp_path / "t.jsonl").read_text())["target"] == ids[7]


def test_feedback_on_a_collection_checks_that_gallery(world_index, rich_index, tmp_path):
    settings = server_settings(world_index["root"], index_name="shop", collections={"rich": rich_index["root"]},
                               feedback_dir=tmp_path / "fb")
    rich_only = next(i for i in rich_index["ids"] if i not in set(world_index["ids"]))
    with LiveServer(settings) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        body = c.post("/collections/rich/search", data={"reference_id": rich_index["ids"][0], "text": "blue"}).json()
        r = c.post("/feedback", json={"query_id": body["query_id"], "item_id": rich_only, "kind": "click"})
        assert r.status_code == 200, r.text
        top = c.post("/search", data={"reference_id": world_index["ids"][0], "text": "blue"}).json()
        r = c.post("/feedback", json={"query_id": top["query_id"], "item_id": rich_only, "kind": "click"})
        assert r.status_code == 404  # the default gallery's query: the other gallery's item is not in it
    query = next(e for e in read_events(tmp_path / "fb") if e["event"] == "query")
    assert query["gallery"] == "rich"
