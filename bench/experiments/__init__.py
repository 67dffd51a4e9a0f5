"""Paper experiments: one module per table under ``docs/results/<name>``."""
