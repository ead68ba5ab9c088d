"""The papers' settings by name (``--preset``).

The settings are those of Frankle & Carbin, *The Lottery Ticket Hypothesis: Finding
Sparse, Trainable Neural Networks* (ICLR 2019: the Conv-2/4/6 networks), and of Frankle,
Dziugaite, Roy & Carbin, *Linear Mode Connectivity and the Lottery Ticket Hypothesis*
(ICML 2020, "LMC": its Table 1's networks and hyperparameters); each preset's
``reference`` names the figure or table it follows.

A preset fixes dataset, model, training and pruning hyperparameters plus the rewind
step the papers use; every field can still be overridden. Layer-rate patterns are globs
over variable or layer paths (:func:`tflth.masking.path_matches`; the zoo names layers
``conv<i>``, ``fc<i>``, ``output``).
"""

from __future__ import annotations

import dataclasses

from tflth.hparams import DatasetHparams, HparamError, ModelHparams, PruningHparams, RunHparams, TrainingHparams

__all__ = ["Preset", "get", "names", "for_model"]


@dataclasses.dataclass(frozen=True)
class Preset:
    name: str
    run: RunHparams
    pruning: PruningHparams
    rewind_step: str
    reference: str  # the paper's figure, for reports


def _sgd(lr, milestones=("32000it", "48000it"), warmup="0it", steps="63000it", batch=128, wd=1e-4):
    return TrainingHparams(optimizer="sgd", lr=lr, momentum=0.9, weight_decay=wd, milestones=milestones,
                           gamma=0.1, warmup=warmup, batch_size=batch, training_steps=steps)


def _adam(lr, steps, batch=60):
    return TrainingHparams(optimizer="adam", lr=lr, batch_size=batch, training_steps=steps)


def _preset(name, dataset, model, training, pruning, rewind, reference):
    return Preset(name, RunHparams(DatasetHparams(dataset), ModelHparams(model), training), pruning, rewind, reference)


# Frankle & Carbin 2019: layerwise rates conv 10% (15% Conv-6), fc 20%, output 10%.
def _conv(n, lr, steps, conv_rate):
    return _preset(f"conv{n}_cifar10", "cifar10", f"conv{n}", _adam(lr, steps),
                   PruningHparams(0.2, "layerwise", (("conv*", conv_rate), ("output", 0.1))), "0it",
                   f"Frankle & Carbin 2019 Conv-{n}")


# Global pruning of ResNets/VGG leaves the output layer unpruned (as open_lth does).
_GLOBAL_NO_OUTPUT = PruningHparams(0.2, "global", (("output", 0.0),))

_PRESETS = {
    p.name: p
    for p in [
        _preset("lenet_300_100_mnist", "mnist", "lenet_300_100", _adam(1.2e-3, "24000it"),
                PruningHparams(0.2, "layerwise", (("output", 0.1),)), "0it",
                "LMC Table 1: 98.3% dense, matching down to 3.5%"),
        _conv(2, 2e-4, "20000it", 0.1),
        _conv(4, 3e-4, "25000it", 0.1),
        _conv(6, 3e-4, "30000it", 0.15),
        _preset("resnet20_cifar10", "cifar10", "resnet20", _sgd(0.1), _GLOBAL_NO_OUTPUT, "500it",
                "LMC Table 1: 91.7% dense, matching down to 16.8%"),
        _preset("resnet20_lowlr_cifar10", "cifar10", "resnet20", _sgd(0.01, milestones=()), _GLOBAL_NO_OUTPUT,
                "0it", "LMC Table 1 (low LR): 88.8% dense, matching down to 8.6%"),
        _preset("resnet20_warmup_cifar10", "cifar10", "resnet20", _sgd(0.03, milestones=(), warmup="30000it"),
                _GLOBAL_NO_OUTPUT, "0it", "LMC Table 1 (warmup): 89.7% dense, matching down to 8.6%"),
        _preset("resnet56_cifar10", "cifar10", "resnet56", _sgd(0.1), _GLOBAL_NO_OUTPUT, "500it",
                "open_lth ResNet-56 setting"),
        _preset("vgg16_cifar10", "cifar10", "vgg16", _sgd(0.1), _GLOBAL_NO_OUTPUT, "1000it",
                "LMC Table 1: 93.7% dense, matching down to 1.5%"),
        _preset("resnet50_imagenet", "imagenet2012", "resnet50",
                _sgd(0.4, milestones=("30ep", "60ep", "80ep"), warmup="5ep", steps="90ep", batch=1024),
                _GLOBAL_NO_OUTPUT, "5ep", "LMC Table 1: 76.1% dense, 30% density one-shot"),
        _preset("resnet18_imagenet", "imagenet2012", "resnet18",
                _sgd(0.4, milestones=("30ep", "60ep", "80ep"), warmup="5ep", steps="90ep", batch=1024),
                _GLOBAL_NO_OUTPUT, "5ep", "ResNet-50 schedule applied to ResNet-18"),
        # A vision transformer at CPU scale (no paper figure): AdamW with DeiT's decoupled
        # weight decay 0.05, constant LR (add --warmup if wanted), 10 epochs of 469 steps.
        _preset("vit_tiny_mnist", "mnist", "vit_tiny",
                TrainingHparams(optimizer="adamw", lr=1e-3, weight_decay=0.05, batch_size=128,
                                training_steps="10ep"),
                _GLOBAL_NO_OUTPUT, "0it", "tflth's own CPU-scale ViT setting (no paper figure)"),
    ]
}


def names() -> list[str]:
    return sorted(_PRESETS)


def get(name: str) -> Preset:
    try:
        return _PRESETS[name]
    except KeyError:
        raise HparamError(f"Unknown preset '{name}': expected one of {names()}.") from None


def for_model(model: str) -> Preset | None:
    """The first preset that trains ``model`` (its paper default), if any."""
    return next((p for p in _PRESETS.values() if p.run.model.name == model), None)
