"""edgefuse: image-text fusion models from FP32 PyTorch to FP16/INT8 engines, with parity proven."""

__version__ = "0.1.0"
