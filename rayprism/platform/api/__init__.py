"""The HTTP API's shapes: request models (validated from the raw bytes) and the response shapes the service
builds its bodies with. No Ray and no FastAPI here: the service and the SDK (``rayprism.client``) share them."""
