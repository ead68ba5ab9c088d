"""tflth: lottery-ticket research for TensorFlow 2 / Keras 3."""

from tflth.layers import MaskedConv2D, MaskedDense, MaskedDepthwiseConv2D
from tflth.convert import masked

__version__ = "0.1.0"

__all__ = ["MaskedConv2D", "MaskedDense", "MaskedDepthwiseConv2D", "masked", "__version__"]
