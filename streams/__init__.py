"""Event schemas, topic names, serialization and producer helpers (contract v1)."""
