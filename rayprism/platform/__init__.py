"""Core used by every path (serve, batch, train); imports no Ray Serve or Ray Train."""
