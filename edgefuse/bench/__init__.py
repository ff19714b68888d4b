"""Benchmarks: latency, throughput and peak memory of PyTorch eager and any artifact, side by side.

`run_bench(variants, ...)` (edgefuse.bench.core) runs each variant in its own worker process
(edgefuse.bench.worker) with interleaved passes; `edgefuse bench` is the CLI.
"""
