"""Parity validation: FP32 PyTorch vs every artifact, task and tensor metrics, gates, reports.

`metrics` (pure numpy), `catalog` (metric names and units), `scoring` (outputs -> metrics with
bootstrap intervals), `gates`, `reports` (JSON / Markdown / HTML / JUnit), `validate` (runs the
models), `commands` (`edgefuse validate`).
"""
