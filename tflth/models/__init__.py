"""tflth model zoo: Keras models by name (plain Keras layers; tflth.masking masks them).

    model = tflth.models.get("resnet20", seed=0)          # CIFAR-10 shape by default
    model = tflth.models.get("lenet_500_200_100", (28, 28, 1), 10, seed=3)
    tflth.models.names()              # canonical names; see registry for patterns
    tflth.models.default_dataset("vgg16")   # 'cifar10'
    tflth.models.count_params(model)  # parameters, masks excluded
    tflth.models.options("vgg16")     # () -- get() options; ("width",) for ResNets

Conventions: every kernel of the zoo is prunable by default (its run masks them all); every layer
has a fixed descriptive name and the logits layer is ``output``; kernels are He-normal
with per-layer seeds derived from ``seed``, biases zero. One module per family
(``lenet``, ``convnet``, ``cifar_resnet``, ``cifar_vgg``, ``imagenet_resnet``, ``vit``); the
``registry`` module maps names to builders.
"""

from tflth.models.registry import DATASETS, count_params, dataset_info, default_dataset, get, names, options
from tflth.models.factory import ModelFactory, factory, is_reference, resolve

__all__ = ["DATASETS", "count_params", "dataset_info", "default_dataset", "get", "names", "options",
           "ModelFactory", "factory", "is_reference", "resolve"]
