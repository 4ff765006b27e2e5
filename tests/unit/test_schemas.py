import json

import jsonschema
import pydantic
import pytest

from rayprism.platform.api.requests import (
    AliasRequest,
    DeleteDocumentsRequest,
    EmbeddingRequest,
    RerankRequest,
    SearchRequest,
    parse_body,
)
from rayprism.platform.config import CollectionConfig
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
    assert (request.model, request.encoding_format, request.dimensions, request.modality, request.truncate) == (
        None, "float", None, "text", True,
    )
    assert parse_body(RerankRequest, b'{"query": "q", "documents": ["d"]}').truncate is True


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
        (b'{"input": "a", "truncate": "false"}', UnprocessableError, "truncate: Input should be a valid boolean"),
    ],
)
def test_bad_bodies_get_a_pointed_error(body, error, fragment):
    with pytest.raises(error) as caught:
        parse_body(EmbeddingRequest, body)
    assert type(caught.value) is error
    assert fragment in caught.value.message


@pytest.mark.parametrize(
    "model, body",
    [
        (EmbeddingRequest, {"input": []}),
        (EmbeddingRequest, {"input": [[]]}),
        (EmbeddingRequest, {"input": [[1.0, 2]]}),
        (EmbeddingRequest, {"input": [[-1]]}),
        (EmbeddingRequest, {"input": "one"}),
        (EmbeddingRequest, {"input": [[2**31]]}),
        (EmbeddingRequest, {"input": "one", "truncate": False}),
        (EmbeddingRequest, {"input": "one", "truncate": "false"}),
        (EmbeddingRequest, {"input": "one", "truncate": 0}),
        (RerankRequest, {"query": "q", "documents": ["d"], "truncate": False}),
        (RerankRequest, {"query": "q", "documents": ["d"], "truncate": None}),
        (SearchRequest, {"query": {}}),
        (SearchRequest, {"query": {"image": "x", "audio": "y"}}),
        (SearchRequest, {"query": {"image": None, "audio": "y"}}),
        (SearchRequest, {"query": {"audio": "y"}}),
        (SearchRequest, {"query": "x", "fusion": {"weights": {"dense": 1}}}),
        (SearchRequest, {"query": "x", "fusion": {"type": "weighted", "weights": {"dense": 1.06e308}}}),
        (SearchRequest, {"query": "x", "fusion": {"type": "rrf", "k": 16384}}),
        (SearchRequest, {"query": "x", "rerank": {"weight": False}}),
        (SearchRequest, {"query": "x", "k": "3"}),
        (SearchRequest, {"query": "x", "k": 3.0}),
        (SearchRequest, {"query": "x", "output_fields": [""]}),
        (DeleteDocumentsRequest, {"ids": [""]}),
        (DeleteDocumentsRequest, {"ids": [-(2**53)]}),
        (DeleteDocumentsRequest, {"ids": [-16018.0, "a"]}),
        (AliasRequest, {"name": "", "collection": "c"}),
        (AliasRequest, {"name": "9live", "collection": "c"}),
        (AliasRequest, {"name": "live", "collection": "c_2"}),
        (CollectionConfig, {"name": ""}),
        (CollectionConfig, {"name": "c", "text_field": ""}),
        (CollectionConfig, {"name": "c", "media_field": "", "modality": "image"}),
    ],
)
def test_the_json_schema_and_the_model_agree(model, body):
    """jsonschema (an independent validator of the document /openapi.json serves) and pydantic
    give the same verdict: the request model is the schema."""
    schema = model.model_json_schema()
    by_schema = jsonschema.Draft202012Validator(schema).is_valid(body)
    try:
        model.model_validate_json(json.dumps(body))
        by_model = True
    except pydantic.ValidationError:
        by_model = False
    assert by_schema == by_model


def keywords(schema) -> set[str]:
    """Every key used anywhere in a JSON schema (property names included: none is called ge or le)."""
    if isinstance(schema, dict):
        return set(schema) | {key for value in schema.values() for key in keywords(value)}
    if isinstance(schema, list):
        return {key for value in schema for key in keywords(value)}
    return set()


def test_every_bound_reaches_the_schema_as_a_json_schema_keyword():
    """pydantic writes a bound it cannot translate (one placed after a validator) as ``ge``/``le``,
    which no JSON Schema validator reads: the schema would then be looser than the model."""
    from rayprism.platform.api import requests

    models = [value for value in vars(requests).values()
              if isinstance(value, type) and issubclass(value, pydantic.BaseModel) and value.__module__ == requests.__name__]
    assert len(models) >= 10
    for model in models:
        assert not {"ge", "le", "gt", "lt"} & keywords(model.model_json_schema()), model.__name__
