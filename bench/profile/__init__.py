"""Op-level profiles of benchmark rows (``bench.run --profile``): where a row's time goes, by the backend's own profiler.

One module per profiler, each with a taker (extra calls after the row's timed calls, never inside them) and a
normaliser from the profiler's saved output to the one record, bench.profile.record.ProfileRecord:
``torch_ops`` (torch.profiler: eager, compile, AOTInductor, CUDA graphs), ``ort_nodes`` (ONNX Runtime session
profiling), ``openvino_counters`` (OpenVINO per-layer performance counters), ``tensorrt_layers`` (TensorRT's layer
profiler). ``take`` picks the profiler for a backend and writes OUT/<device>/profiles/<row key>.json with the native
trace beside it; ``section`` renders summary.md's profile section; ``explain`` is ``bench.compare --explain``.
"""
