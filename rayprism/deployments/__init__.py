"""Ray Serve deployments: the HTTP service and its models."""
