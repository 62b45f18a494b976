"""A schemathesis run against the viewer API's OpenAPI schema: no request gives a server error,
and every answer keeps to the status codes, content types and bodies the schema documents.

Every operation is fuzzed with valid and invalid data, and the session operations once more
with the id of a real session, so that clicks, undo and exports run on a real case."""

from __future__ import annotations

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from petloop.inference.modelset import load_model_set
from petloop.inference.pipeline import Pipeline
from petloop.io.layouts import find_cases
from petloop.server.app import ServerConfig, create_app

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


@pytest.fixture(scope="module")
def api(model_set, work):
    data = work[0] / "phantoms"
    app = create_app(Pipeline(load_model_set(model_set)),
                     ServerConfig(data=data, max_upload_mb=1.0, max_sessions=64))
    with TestClient(app) as client:
        sid = client.post("/api/sessions",
                          json={"case": find_cases(data)[0].case_id}).json()["id"]
    return app, sid


def run_operation(operation, mode, path_parameters=None):
    @given(case=operation.as_strategy(mode, path_parameters=path_parameters))
    @settings(max_examples=12, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case):
        case.call_and_validate(checks=CHECKS)

    try:
        check()
    except Unsatisfiable:
        # an operation without parameters or body has no invalid input to send
        assert mode == GenerationMode.NEGATIVE, operation.path
        return False
    return True


def test_api_conforms_to_its_schema(api):
    app, sid = api
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    ran, negative = [], 0
    for result in schema.get_all_operations():
        op = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            negative += run_operation(op, mode) and mode == GenerationMode.NEGATIVE
            if "{session_id}" in op.path and not op.path.endswith("{session_id}"):
                run_operation(op, mode, {"session_id": sid})
        ran.append(f"{op.method.upper()} {op.path}")
    assert len(ran) >= 14 and negative >= 12, (ran, negative)
