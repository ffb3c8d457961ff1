"""bitexport: take 1-bit and 1.58-bit (BitNet b1.58) language models from PyTorch to phones."""

__version__ = "0.1.0"
