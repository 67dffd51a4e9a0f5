"""Speed benchmarks: every backend (torch, ONNX Runtime FP32/INT8, TensorRT), kernels, stream latency."""
