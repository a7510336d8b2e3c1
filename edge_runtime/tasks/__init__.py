"""Task pre/post-processing around a model: one module per task (`vibration_anomaly`, `rice_sorter`,
`weld_inspector`). See `edge_runtime.tasks.base` for the contract every task module follows."""
