"""Pydantic models for every YAML file in ``configs/``, one module per file kind.

Configs are validated when loaded, before Ray starts: a bad file fails in a
second with the file, the key path and the offending value in the message.
"""

from rayprism.platform.config.base import (
    StrictModel,
    format_validation_error,
    is_lite_uri,
    load_config,
    parse_config,
)
from rayprism.platform.config.collections import (
    BITS_FIELD,
    DENSE_FIELD,
    DOCUMENT_HASH_FIELD,
    DOCUMENT_ID_FIELD,
    DOCUMENT_VECTOR_KEY,
    PIECE_COUNT_FIELD,
    PIECE_FIELDS,
    PIECE_INDEX_FIELD,
    PIECE_START_FIELD,
    SPARSE_FIELD,
    VECTOR_FIELDS,
    ChunkingConfig,
    CollectionConfig,
    CompressionConfig,
    DenseIndexConfig,
    FDEOptions,
    FieldType,
    MultivectorConfig,
)
from rayprism.platform.config.jobs import (
    CodecSpec,
    ComputeConfig,
    InputConfig,
    JobConfig,
    JobModelConfig,
    MatryoshkaCodec,
    OutputConfig,
    load_job_config,
)
from rayprism.platform.config.models import (
    DEFAULT_MODEL_NAME,
    DEFAULT_MODEL_SOURCE,
    BatchingConfig,
    ModelConfig,
    threads_for,
)
from rayprism.platform.config.search import SearchDefaults
from rayprism.platform.config.serve import (
    DEFAULT_MIN_FREE_MB,
    DEFAULT_STORE_URI,
    ApiKeyConfig,
    BatchesConfig,
    DeploymentConfig,
    RateConfig,
    ReplicasConfig,
    SeedConfig,
    ServeConfig,
    ServerConfig,
    StoreConfig,
    load_serve_config,
)
from rayprism.platform.config.train import (
    CheckpointsConfig,
    CorpusConfig,
    CrossEncoderObjectiveConfig,
    EvaluationConfig,
    HardNegativesConfig,
    LossConfig,
    NewImageTextModel,
    PairsConfig,
    TrainComputeConfig,
    TrainConfig,
    TrainDataConfig,
    TrainingConfig,
    TrainModelConfig,
    load_train_config,
)

__all__ = [
    "BITS_FIELD", "DEFAULT_MODEL_NAME", "DEFAULT_MODEL_SOURCE", "DEFAULT_MIN_FREE_MB", "DEFAULT_STORE_URI", "DENSE_FIELD", "DOCUMENT_HASH_FIELD", "DOCUMENT_ID_FIELD",
    "DOCUMENT_VECTOR_KEY", "PIECE_COUNT_FIELD", "PIECE_FIELDS", "PIECE_INDEX_FIELD", "PIECE_START_FIELD", "ChunkingConfig",
    "SPARSE_FIELD", "VECTOR_FIELDS",
    "ApiKeyConfig", "BatchingConfig", "CodecSpec", "CollectionConfig", "CompressionConfig", "ComputeConfig", "DenseIndexConfig", "DeploymentConfig",
    "FDEOptions", "FieldType", "MultivectorConfig", "InputConfig", "JobConfig", "JobModelConfig", "MatryoshkaCodec", "ModelConfig", "OutputConfig",
    "BatchesConfig", "RateConfig", "ReplicasConfig", "SearchDefaults", "SeedConfig", "ServeConfig", "ServerConfig", "StoreConfig", "StrictModel",
    "format_validation_error", "is_lite_uri", "load_config", "load_job_config", "load_serve_config",
    "parse_config", "threads_for",
    "CheckpointsConfig", "CorpusConfig", "CrossEncoderObjectiveConfig", "EvaluationConfig", "HardNegativesConfig", "LossConfig", "NewImageTextModel",
    "PairsConfig", "TrainComputeConfig", "TrainConfig", "TrainDataConfig", "TrainModelConfig", "TrainingConfig",
    "load_train_config",
]
