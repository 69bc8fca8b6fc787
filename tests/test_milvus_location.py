"""Milvus locations and options, checked before any server is dialled."""

from __future__ import annotations

import pytest

from cir.errors import StoreError
from cir.stores import MilvusStore, open_store
from cir.stores.milvus_schema import MilvusLocation
from indexer.cli import main as index_main
from indexer.milvus_config import MilvusBuildConfig
from service.cli import main as serve_main


def test_locations_parse_and_refuse_credentials(monkeypatch):
    monkeypatch.delenv("CIR_MILVUS_TLS", raising=False)
    loc = MilvusLocation.parse("milvus://db.internal:19531/catalog")
    assert (loc.host, loc.port, loc.name, loc.tls, loc.uri) == ("db.internal", 19531, "catalog", False,
                                                                  "http://db.internal:19531")
    assert MilvusLocation.parse("milvuss://h/c").uri == "https://h:19530"
    monkeypatch.setenv("CIR_MILVUS_TLS", "1")
    assert MilvusLocation.parse("milvus://h/c").tls
    for bad in ("milvus://user:pw@h/c", "milvus://h/c?token=x", "milvus://h/", "milvus://h/a__b", "milvus://h/1x",
                "milvus://h/a-b", "milvus://h:99999/c"):
        with pytest.raises(StoreError):
            MilvusLocation.parse(bad)
    assert isinstance(open_store("milvus://h/c"), MilvusStore)
    with pytest.raises(StoreError, match="CIR_MILVUS_CONSISTENCY"):
        MilvusStore("milvus://h/c", consistency="Sometimes")


def test_build_options_are_validated():
    assert MilvusBuildConfig("milvus://h/c").index == {"index_type": "HNSW", "params": {"M": 16, "efConstruction": 200}}
    assert MilvusBuildConfig("milvus://h/c", "IVF_SQ8", '{"nlist": 64}', '{"nprobe": 8}').search == {"nprobe": 8}
    for kwargs in ({"store": "/tmp/root"}, {"store": "milvus://h/c", "index_type": "ANNOY"},
                   {"store": "milvus://h/c", "index_params": "[1]"}, {"store": "milvus://h/c", "search_params": "{"}):
        with pytest.raises(ValueError):
            MilvusBuildConfig(**kwargs)


def test_cli_usage_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CIR_STORE", raising=False)
    assert index_main(["build", "--gallery", str(tmp_path), "--model", "toy"]) == 2
    assert "give --out ROOT" in capsys.readouterr().err
    assert index_main(["build", "--gallery", str(tmp_path), "--model", "toy", "--store", "milvus://h/c",
                       "--milvus-index-params", "nope"]) == 2
    assert "--milvus-index-params must be a JSON object" in capsys.readouterr().err
    monkeypatch.delenv("CIR_INDEX", raising=False)
    assert serve_main([]) == 2
    assert "--store milvus://" in capsys.readouterr().err
