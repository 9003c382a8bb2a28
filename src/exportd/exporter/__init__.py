"""The exporter: runs exactly one export per process, from spec to stored file.

It never imports kopf or fastapi. The API's local runner and the operator's Jobs both start it as
``python -m exportd.exporter``; exit codes are documented in :mod:`exportd.contract.errors`.
"""
