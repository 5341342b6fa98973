"""Property-based requests generated from the service's own OpenAPI schema (schemathesis):
whatever a client sends that the schema allows, or nearly allows, no response is a 500."""

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="the schema fuzz needs schemathesis (pip install schemathesis)")
from hypothesis import HealthCheck, settings  # noqa: E402  (schemathesis brings hypothesis)


@pytest.fixture
def api_schema(app):
    return schemathesis.openapi.from_asgi("/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=15, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_generated_request_gets_a_server_error(case):
    response = case.call()
    assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:200])
    if response.status_code >= 400:
        assert set(response.json()) == {"detail"}      # one message, never a stack trace
