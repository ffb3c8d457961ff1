from bitexport.model.bitlinear import BitLinear
from bitexport.model.quant import absmean_ternarize, quantize_activations
from bitexport.model.decoder import BitNetDecoder, RMSNorm

__all__ = ["BitLinear", "BitNetDecoder", "RMSNorm", "absmean_ternarize", "quantize_activations"]
