"""tflth: lottery-ticket research for TensorFlow 2 / Keras 3.

Masks live on variables of any Keras 3 model (:mod:`tflth.masking`); pruning
strategies in :mod:`tflth.pruning`; IMP with rewinding and its controls in
:mod:`tflth.lottery`; the training engine in :mod:`tflth.training`; stability analysis
in :mod:`tflth.stability`.
"""

from tflth import _startup

_startup.import_tensorflow()

from tflth import masking, models, pruning  # noqa: E402
from tflth.masking import Masks, load_model, masked, unmasked  # noqa: E402

__version__ = "0.2.0"

__all__ = ["Masks", "load_model", "masked", "masking", "models", "pruning", "unmasked", "__version__"]
