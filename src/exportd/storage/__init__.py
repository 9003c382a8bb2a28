"""Where finished export files live: one interface, a module per backend (local, S3, GCS)."""

from exportd.storage.base import Storage, StoredObject, storage_from_settings

__all__ = ["Storage", "StoredObject", "storage_from_settings"]
