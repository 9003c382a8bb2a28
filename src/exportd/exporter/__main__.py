"""``python -m exportd.exporter``: run one export and exit with its documented code."""

from exportd.exporter.cli import main

raise SystemExit(main())
