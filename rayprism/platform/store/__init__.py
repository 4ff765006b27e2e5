"""Milvus collections: schema from config, documents checked before writing, hybrid search."""
