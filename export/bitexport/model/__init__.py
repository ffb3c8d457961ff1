from bitexport.model.bitlinear import BitLinear, absmean_ternarize, quantize_activations
from bitexport.model.decoder import BitNetDecoder, RMSNorm

__all__ = ["BitLinear", "BitNetDecoder", "RMSNorm", "absmean_ternarize", "quantize_activations"]
