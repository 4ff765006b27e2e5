"""schemathesis against the live service: every route, bounded examples, valid and invalid requests.

Checks: no answer is a 5xx, every status is one the route documents, every body matches the
documented schema (the error shape included), and the request schema is the validation: a request
the schema allows is never refused as not fitting it (422), one it forbids is never accepted.
A 400 stays a fair answer to valid-looking data: it is the documented status for values only the
service can judge (an unknown filter field, a collection that is not an alias, an empty text).
"""

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          positive_data_acceptance, negative_data_rejection]
EXAMPLES_PER_OPERATION_AND_MODE = 25
ACCEPTED = ["2xx", "400", "401", "403", "404", "409", "413", "429"]
"""What valid data may get: anything but a 422 ("does not fit the schema") or a 5xx."""
ON_DATA = {"POST /v1/collections/{name}/search": "debian"}
"""Read-only routes fuzzed a second time on the session's collection, so bodies reach the store."""
schemathesis.serializer.alias("application/vnd.apache.arrow.stream", "application/octet-stream")
"""A restore's rows (an Arrow IPC stream) are sent as the bytes generated for them, as any binary body."""
CROSS_FIELD_RULES = {"POST /v1/collections"}
"""Bodies with rules between fields that the schema does not state yet (media_field needs an image or
audio modality, multivector needs metric IP and text, compression needs COSINE or IP): valid-looking
data may get a 422 there. Every other check still runs on them."""


def test_every_post_and_delete_declares_its_body(service_url):
    paths = httpx.get(f"{service_url}/openapi.json", timeout=30).json()["paths"]
    with_body = {(method, path) for path, operations in paths.items() for method, operation in operations.items()
                 if "requestBody" in operation}
    expected = {(method, path) for path, operations in paths.items() for method in operations
                if method in ("post", "delete")} - {("delete", "/v1/collections/{name}"),
                                                    ("delete", "/v1/aliases/{name}"),
                                                    ("delete", "/v1/snapshots/{snapshot_id}"),  # a drop has no body
                                                    ("delete", "/v1/files/{file_id}"),
                                                    ("delete", "/v1/collections/{name}/search_defaults"),
                                                    ("post", "/v1/batches/{batch_id}/cancel")}  # nor, as OpenAI's, this
    assert expected <= with_body and len(expected) >= 5


def test_every_answer_is_documented_and_none_is_a_server_error(service_url):
    config = SchemathesisConfig.from_dict({"checks": {"positive_data_acceptance": {"expected-statuses": ACCEPTED}}})
    schema = schemathesis.openapi.from_url(f"{service_url}/openapi.json", config=config)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 14
    runs = [(operation, None) for operation in operations]
    runs += [(operation, ON_DATA[operation.label]) for operation in operations if operation.label in ON_DATA]
    failures = [failure for operation, name in runs for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
                for failure in fuzz(operation, mode, name)]
    assert not failures, "\n\n".join(failures)


def fuzz(operation, mode: GenerationMode, name: str | None) -> list[str]:
    """The operation's failures in ``mode`` (none or one: hypothesis stops at the first), its path's
    ``name`` set to ``name`` when given."""

    @settings(max_examples=EXAMPLES_PER_OPERATION_AND_MODE, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def exercise(case):
        if name is not None:
            case.path_parameters = {"name": name}
        skipped = [positive_data_acceptance] if operation.label in CROSS_FIELD_RULES else []
        case.call_and_validate(checks=[check for check in CHECKS if check not in skipped], timeout=60)

    try:
        exercise()
    except Unsatisfiable:  # nothing invalid can be sent to, say, a route without parameters
        return []
    except (Exception, BaseExceptionGroup) as error:  # schemathesis's FailureGroup is a BaseExceptionGroup
        return [f"{operation.label} {name or ''} ({mode.value}): {error}"]
    return []
