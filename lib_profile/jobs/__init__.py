"""Background jobs (training, generation): a SQLite record each, run one at a time by a worker thread."""
