"""A filter value no item has gets a warning naming the closest values (HTTP and `cir search`)."""

from __future__ import annotations

import json

import httpx

from cir.filter_hints import closest_values, filter_hints
from cir.filters import parse_filter
from cir_cli.search import main as search_main
from service_fixtures import rich_index, rich_server, world_index  # noqa: F401 - fixtures

FIELDS = {"category": {"type": "string", "values": {"stickers": 3, "posters": 2, "sticker packs": 1}},
          "tags": {"type": "tags", "values": {"sale": 4, "new": 1}}, "price": {"type": "number"},
          "huge": {"type": "string", "distinct": 5000}}


def test_closest_values_put_the_other_case_first():
    assert closest_values("Stickers", ["posters", "sticker packs", "stickers"])[0] == "stickers"
    assert closest_values("zzz", ["stickers"]) == []


def test_one_warning_per_absent_value_with_the_closest():
    flt = parse_filter({"category": "Stickers", "tags": {"any": ["sael", "sale"]}, "price": 3, "huge": "x"})
    warnings = filter_hints(flt, FIELDS)
    assert len(warnings) == 2
    assert warnings[0].startswith('filter: field "category" has no value "Stickers"')
    assert 'closest: "stickers"' in warnings[0]
    assert '"sael"' in warnings[1] and 'closest: "sale"' in warnings[1]


def test_known_values_and_other_fields_give_no_warning():
    assert filter_hints(parse_filter({"category": {"in": ["stickers", "posters"]}, "tags": "sale"}), FIELDS) == []
    assert filter_hints(None, FIELDS) == [] and filter_hints(parse_filter({"category": "x"}), {}) == []


def test_values_that_exclude_get_no_warning_but_or_branches_do():
    """Under ne, nin or not an absent value excludes nothing: no item is lost, so nothing to warn about."""
    excluding = {"category": {"ne": "Stickers"}, "tags": {"nin": ["sael"]}, "not": {"category": "Posterz"}}
    assert filter_hints(parse_filter(excluding), FIELDS) == []
    warnings = filter_hints(parse_filter({"or": [{"category": "Stickers"}, {"tags": "new"}]}), FIELDS)
    assert len(warnings) == 1 and '"Stickers"' in warnings[0]


def test_a_lone_surrogate_value_is_escaped_in_the_warning():
    warnings = filter_hints(parse_filter('{"category": "\\ud800"}'), FIELDS)
    assert warnings and "\\ud800" in warnings[0]
    warnings[0].encode("utf-8")


def test_http_search_warns_about_a_value_in_the_wrong_case(rich_server):
    r = httpx.post(rich_server.url + "/search", data={"text": "a shape", "filter": json.dumps({"colour": "Blue"})})
    assert r.status_code == 200 and r.json()["results"] == []
    assert any('has no value "Blue"' in w and 'closest: "blue"' in w for w in r.json()["warnings"])
    ok = httpx.post(rich_server.url + "/search", data={"text": "a shape", "filter": json.dumps({"colour": "blue"})})
    assert ok.json()["results"] and ok.json()["warnings"] == []


def test_cir_search_shows_the_same_warning(rich_index, capsys):
    rc = search_main(["--index", str(rich_index["root"]), "--text", "a shape", "--filter", '{"colour": "Blue"}',
                      "--json"])
    assert rc == 0
    assert any('closest: "blue"' in w for w in json.loads(capsys.readouterr().out)["warnings"])
