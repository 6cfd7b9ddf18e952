"""The gate service over HTTP: FastAPI app split by resource, auth, settings, live cameras and what
their decisions do, unlock delivery (SSE, signed webhook), metrics."""
