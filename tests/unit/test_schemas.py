import pytest

from rayprism.deployments.schemas import EmbeddingRequest, parse_body
from rayprism.platform.errors import InvalidInputError, UnprocessableError


@pytest.mark.parametrize(
    "body, expected",
    [
        (b'{"input": "one"}', ["one"]),
        (b'{"input": ["a", "b"]}', ["a", "b"]),
        (b'{"input": [1, 2, 3]}', [[1, 2, 3]]),
        (b'{"input": [[1, 2], [3]]}', [[1, 2], [3]]),
    ],
)
def test_every_openai_input_shape_becomes_a_list(body, expected):
    assert parse_body(EmbeddingRequest, body).input == expected


def test_defaults():
    request = parse_body(EmbeddingRequest, b'{"input": "x"}')
    assert (request.model, request.encoding_format, request.dimensions, request.modality) == (
        None, "float", None, "text",
    )


@pytest.mark.parametrize(
    "body, error, fragment",
    [
        (b"{not json", InvalidInputError, "not valid JSON"),
        (b"[1, 2]", InvalidInputError, "must be a JSON object"),
        (b'{"input": 5}', UnprocessableError, "input: must be a string"),
        (b'{"input": []}', UnprocessableError, "input: must not be empty"),
        (b'{"input": [true, false]}', UnprocessableError, "input: must be"),
        (b'{"input": ["a", 1]}', UnprocessableError, "input: must be"),
        (b'{"model": "m"}', UnprocessableError, "input: field required"),
        (b'{"input": "a", "encoding_format": "int8"}', UnprocessableError, "encoding_format"),
        (b'{"input": "a", "dimensions": 0}', UnprocessableError, "dimensions"),
        (b'{"input": "a", "dimension": 3}', UnprocessableError, "dimension: unknown field"),
    ],
)
def test_bad_bodies_get_a_pointed_error(body, error, fragment):
    with pytest.raises(error) as caught:
        parse_body(EmbeddingRequest, body)
    assert type(caught.value) is error
    assert fragment in caught.value.message
