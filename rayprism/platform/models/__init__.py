"""Encoders: one protocol for every modality, backends loaded by name."""

from rayprism.platform.models.base import Embeddings, Encoder, Modality, Prepared

__all__ = ["Embeddings", "Encoder", "Modality", "Prepared"]
