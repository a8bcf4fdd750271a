"""Stage 5, the transport's internals: admission, authentication and origins for the FastAPI routes."""
