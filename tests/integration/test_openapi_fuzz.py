"""schemathesis against the live service: every route, bounded examples, valid and invalid requests.

Checks: no answer is a 5xx, every status is one the route documents, and every body matches
the documented schema (the error shape included).
"""

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES_PER_OPERATION_AND_MODE = 15


def test_every_post_and_delete_declares_its_body(service_url):
    paths = httpx.get(f"{service_url}/openapi.json", timeout=30).json()["paths"]
    with_body = {(method, path) for path, operations in paths.items() for method, operation in operations.items()
                 if "requestBody" in operation}
    expected = {(method, path) for path, operations in paths.items() for method in operations
                if method in ("post", "delete")} - {("delete", "/v1/collections/{name}"),
                                                    ("delete", "/v1/aliases/{name}")}  # a drop has no body
    assert expected <= with_body and len(expected) >= 5


def test_every_answer_is_documented_and_none_is_a_server_error(service_url):
    schema = schemathesis.openapi.from_url(f"{service_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 14
    failures = []
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(max_examples=EXAMPLES_PER_OPERATION_AND_MODE, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def exercise(case):
                case.call_and_validate(checks=CHECKS, timeout=60)

            try:
                exercise()
            except Unsatisfiable:  # nothing invalid can be sent to, say, a route without parameters
                continue
            except Exception as error:  # collect them all: one run shows every broken route
                failures.append(f"{operation.label} ({mode.value}): {error}")
    assert not failures, "\n\n".join(failures)
