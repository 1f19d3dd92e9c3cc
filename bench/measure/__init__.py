"""How every figure is measured: ``timing`` (the one clock and its sampling plans), ``stats`` (percentiles,
bootstrap intervals), ``memory`` (a row's peak), ``machine`` (calibration, peaks, CPU flags) and ``numerics`` (the
one maths policy: TF32, cudnn.benchmark, ONNX Runtime's CUDA options)."""
