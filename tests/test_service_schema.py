"""Property-based run of the OpenAPI schema (schemathesis) against the live server: no 5xx, ever.

Every operation gets a bounded number of generated requests, valid (positive) and invalid
(negative) ones; the answers must never be 5xx and must match the documented status codes,
content types and response schemas.
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode, checks  # noqa: E402

from service_fixtures import live_server, world_index  # noqa: E402,F401 - fixtures

EXAMPLES = 15  # per operation and mode: the whole run stays well under a minute
CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_schema_conformance]


@pytest.fixture(scope="module")
def api_schema(live_server):
    return schemathesis.openapi.from_url(live_server.url + "/openapi.json")


def _operations(schema):
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_never_answers_5xx(api_schema, live_server, mode):
    operations = _operations(api_schema)
    assert {op.path for op in operations} >= {"/search", "/images/{item_id}", "/info", "/admin/reload"}
    for operation in operations:
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case):
            case.call_and_validate(base_url=live_server.url, checks=CHECKS)

        try:
            run()
        except Unsatisfiable:
            # an operation without parameters or body has no invalid input to generate
            assert mode is GenerationMode.NEGATIVE, operation.label
