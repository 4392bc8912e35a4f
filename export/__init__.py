"""Getting the Net out of PyTorch: ONNX models for inference and one training step."""
