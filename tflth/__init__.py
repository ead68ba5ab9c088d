"""tflth: lottery-ticket research for TensorFlow 2 / Keras 3."""

from tflth import _startup

_startup.import_tensorflow()

# Importing the layers registers them with Keras, so .keras files load without custom_objects.

from tflth.layers import MaskedConv2D, MaskedDense, MaskedDepthwiseConv2D
from tflth.convert import masked, unmasked
from tflth import masks, models  # noqa: E402  (tflth.models.get after a bare `import tflth`)

__version__ = "0.1.0"

__all__ = ["MaskedConv2D", "MaskedDense", "MaskedDepthwiseConv2D", "masked", "masks", "models", "unmasked",
           "__version__"]
