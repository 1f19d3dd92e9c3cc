"""The vendor cross-check: eager against torch.utils.benchmark, each vendor row against the vendor's own timing
(OpenVINO's benchmark_app). ``python -m bench.crosscheck`` is its command."""
