"""`edge-runtime evaluate MODEL --data DIR`: one module per task, each with `evaluate(data_dir, *, variant, ...)`."""
