"""Running exportd: metrics, JSON logs, housekeeping, backups and the generated configuration
reference."""
