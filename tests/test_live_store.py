"""The live set: random upserts, patches and deletes on a Flat index, checked after every step against a
brute-force model (results, filtered results and facets), again after a restart and after compaction."""

from __future__ import annotations

import numpy as np
import pytest
from live_fixtures import COLOURS, TAGS, LiveModel, make_root, unit

from cir.filters import parse_filter
from cir.stores import Delete, FaissRootStore, Patch, Upsert
from cir.stores import overlay_graph
from cir.stores.compact import compact

DIM = 16
FILTERS = [({"colour": "red"}, lambda m: m.get("colour") == "red"),
           ({"price": {"gte": 20, "lt": 70}}, lambda m: "price" in m and 20 <= m["price"] < 70),
           ({"tags": {"any": ["sale"]}}, lambda m: "sale" in m.get("tags", [])),
           ({"in_stock": True, "colour": {"ne": "blue"}},
            lambda m: m.get("in_stock") is True and "colour" in m and m["colour"] != "blue"),
           ({"size": "XL"}, lambda m: m.get("size") == "XL")]


def check(view, model: LiveModel, rng: np.random.Generator, k: int = 8) -> None:
    """The view answers exactly what brute force over the model answers."""
    assert view.count == len(model.vectors)
    queries = unit(rng, 3, DIM)
    scores, ids = view.search(queries, k)
    for q, s, got in zip(queries, scores, ids):
        want = model.search(q, k)
        assert got == [i for i, _ in want]
        np.testing.assert_allclose(s[: len(got)], [x for _, x in want], rtol=1e-5, atol=1e-5)
    fields = view.fields
    assert fields == model.facets()
    for raw, keep in FILTERS:
        if any(f not in fields for f in raw):
            continue
        bound = parse_filter(raw).bind(fields)
        s, got = view.search_where(queries[0], k, bound)
        want = model.search(queries[0], k, keep)
        assert got == [i for i, _ in want], raw
    for item_id in list(model.vectors)[:5] + ["b0001", "n3"]:
        item = view.item(item_id)
        if item_id in model.vectors:
            assert item["metadata"] == model.metadata[item_id]
            np.testing.assert_allclose(view.embedding(item_id), model.vectors[item_id], atol=1e-6)
        else:
            assert item is None and view.embedding(item_id) is None


def random_op(rng: np.random.Generator, model: LiveModel, step: int):
    """One random operation (and the model's change), new ids and existing ones alike."""
    kind = rng.choice(["upsert", "upsert_new", "patch", "delete", "batch"])
    ids = sorted(model.vectors)
    if kind in ("upsert", "upsert_new") or not ids:
        item_id = f"n{step}" if kind == "upsert_new" or not ids else ids[int(rng.integers(len(ids)))]
        vec = unit(rng, 1, DIM)[0]
        meta = {"colour": COLOURS[int(rng.integers(4))], "price": float(rng.integers(0, 100)),
                "tags": TAGS[int(rng.integers(4))]}
        if rng.random() < 0.3:
            meta["size"] = "XL"  # a field the base version does not have
        model.upsert(item_id, vec, meta)
        return [Upsert(item_id, vec, vec, meta)]
    item_id = ids[int(rng.integers(len(ids)))]
    if kind == "patch":
        patch = {"colour": COLOURS[int(rng.integers(4))], "price": None if rng.random() < 0.3 else 42.0}
        model.patch(item_id, patch)
        return [Patch(item_id, patch)]
    if kind == "delete":
        model.delete(item_id)
        return [Delete(item_id)]
    a, b = ids[int(rng.integers(len(ids)))], ids[int(rng.integers(len(ids)))]
    model.patch(a, {"in_stock": False})
    ops = [Patch(a, {"in_stock": False})]
    if b in model.vectors:
        model.delete(b)
        ops.append(Delete(b))
    return ops


@pytest.mark.parametrize("seed", [0, 1])
def test_live_set_matches_brute_force(tmp_path, seed):
    base = make_root(tmp_path / "root", n=60, dim=DIM, seed=seed)
    model = LiveModel(base["vectors"], base["metadata"], base["types"])
    rng = np.random.default_rng(100 + seed)
    store = FaissRootStore(base["root"])
    check(store.open(), model, rng)
    for step in range(60):
        results = store.write(random_op(rng, model, step))
        assert all(r.status == "ok" for r in results), results
        check(store.open(), model, rng)
    store.close()
    restarted = FaissRootStore(base["root"])  # replayed from the log alone
    check(restarted.open(), model, rng)
    result = compact(base["root"], store_=restarted)
    assert result.status == "compacted" and result.folded > 0
    compacted = FaissRootStore(base["root"])
    view = compacted.open()
    assert view.version == result.version and not view.changed and view.pending == 0
    check(view, model, rng)
    for step in range(60, 75):  # writes after compaction apply on the new version, also after a restart
        assert all(r.status == "ok" for r in compacted.write(random_op(rng, model, step)))
        check(compacted.open(), model, rng)
    compacted.close()
    again = FaissRootStore(base["root"])
    check(again.open(), model, rng)
    again.close()


def test_rejected_writes_change_nothing(tmp_path):
    base = make_root(tmp_path / "root", n=20, dim=DIM)
    store = FaissRootStore(base["root"])
    vec = unit(np.random.default_rng(0), 1, DIM)[0]
    results = store.write([Patch("missing", {"a": 1}), Delete("missing"), Upsert("", vec, vec, {}),
                           Upsert("x\n", vec, vec, {}), Upsert("x" * 600, vec, vec, {}),
                           Upsert("ok", vec, vec, {"price": "cheap"}), Patch("b0001", {"colour": 3}),
                           Upsert("short", vec[:4], vec[:4], {}), Patch("b0002", {"blob": "x" * 70_000})])
    assert [r.status for r in results] == ["not_found", "not_found"] + ["invalid"] * 7
    assert "price" in results[5].error and "colour" in results[6].error
    assert not store.log.path.exists() or store.log.path.stat().st_size == 0
    assert store.open().count == 20 and not store.open().changed


def test_batch_sees_its_own_earlier_operations(tmp_path):
    base = make_root(tmp_path / "root", n=10, dim=DIM)
    store = FaissRootStore(base["root"])
    vec = unit(np.random.default_rng(1), 1, DIM)[0]
    results = store.write([Upsert("new", vec, vec, {"colour": "red"}), Patch("new", {"colour": "blue"}),
                           Delete("new"), Patch("new", {"colour": "red"})])
    assert [r.status for r in results] == ["ok", "ok", "ok", "not_found"]
    assert [r.change for r in results[:3]] == [1, 2, 3]
    assert store.open().item("new") is None


def recall(view, model: LiveModel, queries: np.ndarray, k: int = 10) -> float:
    """Share of the brute-force top-k of the live set the view finds."""
    _, ids = view.search(queries, k)
    return float(np.mean([len(set(got) & {i for i, _ in model.search(q, k)}) / k for q, got in zip(queries, ids)]))


@pytest.mark.parametrize("factory", ["HNSW16", "IVF8,Flat"])
def test_ann_live_recall_and_masked_compaction(tmp_path, factory, monkeypatch):
    monkeypatch.setattr(overlay_graph, "SCAN_MAX", 4)  # pending upserts are searched through their graph
    monkeypatch.setattr(overlay_graph, "ADD_CHUNK", 3)
    base = make_root(tmp_path / "root", n=600, dim=DIM, seed=3, factory=factory)
    model = LiveModel(base["vectors"], base["metadata"], base["types"])
    store = FaissRootStore(base["root"])
    queries = unit(np.random.default_rng(9), 50, DIM)
    own = recall(store.open(), model, queries)
    rng = np.random.default_rng(4)
    for step in range(40):
        assert all(r.status == "ok" for r in store.write(random_op(rng, model, step)))
    view = store.open()
    assert view.count == len(model.vectors) and set(view.ids) == set(model.vectors)
    assert view._graphed >= 10 and recall(view, model, queries) >= own - 0.02
    assert recall(FaissRootStore(base["root"]).open(), model, queries) >= own - 0.02  # replayed and re-indexed
    result = compact(base["root"], store_=store)
    assert result.removed > 0 and result.index == "added, deleted rows masked"
    compacted = FaissRootStore(base["root"]).open()
    assert (base["root"] / "versions" / result.version / "deleted.npy").is_file() == bool(result.removed)
    assert compacted.count == len(model.vectors) and set(compacted.ids) == set(model.vectors)
    assert compacted.fields == model.facets() and recall(compacted, model, queries) >= own - 0.02
    for item_id in list(model.vectors)[:10]:
        assert compacted.item(item_id)["metadata"] == model.metadata[item_id]
    rebuilt = compact(base["root"], rebuild_share=0.0) if store.write([Delete(sorted(model.vectors)[0])]) else None
    model.delete(sorted(model.vectors)[0])
    assert rebuilt.index == ("rebuilt" if factory.startswith("HNSW") else "refilled")
    final = FaissRootStore(base["root"]).open()
    assert not final.changed and set(final.ids) == set(model.vectors) and final.fields == model.facets()
    assert recall(final, model, queries) >= own - 0.02
