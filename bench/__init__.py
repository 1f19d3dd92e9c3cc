"""The benchmark harness: training throughput, inference latency, ONNX Runtime parity, comparison tables."""
