"""What is built once per model under test and shared by phases and backends: ONNX export, accuracy."""
