"""The ``persona`` command: serve, ingest, train, list and roll back personas."""
