"""The HTTP API of exportd (FastAPI). Build it with :func:`create_app`."""

from exportd.api.app import create_app

__all__ = ["create_app"]
