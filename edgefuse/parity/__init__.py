"""Parity validation: FP32 PyTorch vs every artifact, task and tensor metrics, gates, reports.

`metrics` (pure numpy, with bootstrap statistics), `catalog` (metric names, units, directions),
`scoring` (outputs -> metrics with paired bootstrap intervals), `gates`, `evalset` (museum
split or a user's folder, flattened per task), `predict` (shared feeds; PyTorch and Runner
predictors), `validate` (checks artifacts, runs everything), `reports` + `plots` (JSON /
Markdown / HTML / JUnit), `commands` (`edgefuse validate`).
"""
