"""Benchmark phases, registered in PHASES (filled by bench.phases modules)."""
