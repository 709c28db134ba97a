"""Deployment: ONNX export (:mod:`.export_onnx`, needs PyTorch) and ONNX prediction
(:mod:`.onnx_segmenter`, NumPy, Pillow and onnxruntime only)."""
