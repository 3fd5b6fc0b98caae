"""The methods and data sets of the report (:func:`tf_lrp.evaluate.run_report`).

Importing this module does not import TensorFlow: the method table is built on first use, and
:data:`METHODS` spells its keys out (``tf-lrp --help`` lists them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from tf_lrp.errors import InputError

__all__ = ["DATASETS", "METHODS", "TOKEN_METHODS", "Setting"]


@dataclasses.dataclass(frozen=True)
class Setting:
    """What a data set tells the methods and metrics.

    Attributes
    ----------
    low, high
        Input bounds (z^B rules, DeepTaylor).
    baseline
        The removal value of pixel flipping and IROF, and the Integrated Gradients baseline: a
        number or ``"mean"`` (each image's mean colour).
    has_masks
        Whether the data has ground-truth masks (localisation).
    patch_size
        Pixel-flipping patch side.
    images
        Image data (``(n, H, W, C)``): the blurred second baseline, ROAD and IROF apply.
    zero
        The data's 0 (black for images in [0, 1], mid-grey for digits in [-1, 1]): the baseline
        of ``integrated_gradients_zero``, which differs from the removal value.
    second
        The second removal value of pixel flipping (images): ``"blur"`` (a Gaussian-blurred copy
        of the image), ``"mean"``, a number, or ``None``.
    """

    low: float
    high: float
    baseline: float | str
    has_masks: bool
    patch_size: int = 2
    images: bool = True
    zero: float = 0.0
    second: float | str | None = "blur"


#: Data sets of the report. Digits: background -1 is "no ink"; shapes and scenes: the image's
#: mean colour is (nearly) the background colour (for scenes, the mean of the texture), so
#: replacing a patch by it erases what was there. Tokens: token flipping replaces a token by
#: the padding token 0 (masked out by the shipped text models), one token at a time; the masks
#: are the planted keywords.
DATASETS = {
    "digits": Setting(low=-1.0, high=1.0, baseline=-1.0, has_masks=False),
    "shapes": Setting(low=0.0, high=1.0, baseline="mean", has_masks=True),
    "scenes": Setting(low=0.0, high=1.0, baseline="mean", has_masks=True, patch_size=4),
    "tokens": Setting(low=0.0, high=0.0, baseline=0.0, has_masks=True, patch_size=1,
                      images=False),
}


def _lrp(composite_or_rule):
    def factory(model, setting: Setting, seed: int):
        import tf_lrp

        return tf_lrp.Analyzer(model, composite_or_rule(setting))

    return factory


def _baseline_method(name: str):
    def factory(model, setting: Setting, seed: int):
        from tf_lrp import analyzers, baselines

        if name == "smoothgrad":
            return baselines.SmoothGrad(model, seed=seed)
        if name == "integrated_gradients":
            return baselines.IntegratedGradients(model, baseline=setting.baseline)
        if name == "integrated_gradients_zero":
            return baselines.IntegratedGradients(model, baseline=setting.zero)
        if name == "random":
            return baselines.Random(model, seed=seed)
        return getattr(analyzers, name)(model)

    return factory


def _method_table() -> dict[str, tuple[str, Callable]]:
    """``name -> (label, factory(model, setting, seed) -> analyzer)`` in table order."""
    from tf_lrp import composites, rules

    return {
        "lrp0": ("LRP-0", _lrp(lambda s: rules.Zero())),
        "epsilon": ("LRP-ε (ε=0.25)", _lrp(lambda s: rules.Epsilon(0.25))),
        "epsilon_plus": ("EpsilonPlus", _lrp(lambda s: composites.EpsilonPlus())),
        "epsilon_gamma_box": ("EpsilonGammaBox",
                              _lrp(lambda s: composites.EpsilonGammaBox(s.low, s.high))),
        "epsilon_alpha2_beta1": ("EpsilonAlpha2Beta1",
                                 _lrp(lambda s: composites.EpsilonAlpha2Beta1())),
        "deep_taylor": ("DeepTaylor", _lrp(lambda s: composites.DeepTaylor(s.low, s.high))),
        "attn_lrp": ("AttnLRP", _lrp(lambda s: composites.AttnLRP())),
        "cp_lrp": ("CP-LRP", _lrp(lambda s: composites.CPLRP())),
        "gradient": ("Gradient", _baseline_method("Gradient")),
        "sensitivity": ("Sensitivity", _baseline_method("Sensitivity")),
        "gradient_x_input": ("Gradient×Input", _baseline_method("GradientXInput")),
        "smoothgrad": ("SmoothGrad (σ=0.15, n=50)", _baseline_method("smoothgrad")),
        "integrated_gradients": ("IntegratedGradients (50 steps)",
                                 _baseline_method("integrated_gradients")),
        "integrated_gradients_zero": ("IntegratedGradients (50 steps, baseline 0)",
                                      _baseline_method("integrated_gradients_zero")),
        "random": ("Random", _baseline_method("random")),
    }


#: Method names of the report, in table order (the keys of ``_method_table()``, spelled out so
#: that importing this module, e.g. for ``tf-lrp --help``, does not import TensorFlow).
METHODS = ("lrp0", "epsilon", "epsilon_plus", "epsilon_gamma_box", "epsilon_alpha2_beta1",
           "deep_taylor", "attn_lrp", "cp_lrp", "gradient", "sensitivity", "gradient_x_input",
           "smoothgrad", "integrated_gradients", "integrated_gradients_zero", "random")
#: The methods of the report on token data (the image composites' first-layer rules and
#: bounds mean nothing for embeddings).
TOKEN_METHODS = ("attn_lrp", "cp_lrp", "epsilon", "gradient_x_input", "integrated_gradients",
                 "smoothgrad", "random")


def _square_rgb(data: str, shape: tuple) -> None:
    if len(shape) != 3 or shape[0] != shape[1] or shape[2] != 3:
        raise InputError(f"--data {data} needs a model with a square RGB input; it takes {shape}")


def load_data(data: str, model, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(x, y, masks or None)``: ``n`` held-out samples of ``data`` for ``model``'s input."""
    from tf_lrp import datasets

    shape = tuple(model.inputs[0].shape[1:])
    if data == "tokens":
        if len(shape) != 1:
            raise InputError(f"--data tokens needs a model that takes token sequences (length,); "
                             f"this model takes {shape}")
        return datasets.make_tokens(n, length=shape[0] or datasets.TOKENS_LENGTH,
                                    seed=datasets.TOKENS_TEST_SEED)
    if data == "digits":
        sizes = {(28, 28, 1): 0, (32, 32, 1): datasets.LENET_PAD}
        if shape not in sizes:
            raise InputError(f"--data digits needs a model with input (28, 28, 1) or (32, 32, 1); "
                             f"this model takes {shape}")
        x, y = datasets.load_digits(pad=sizes[shape])
        if n > len(x):
            raise InputError(f"the digits test split has {len(x)} samples; asked for {n}")
        return x[:n], y[:n], None
    _square_rgb(data, shape)
    if data == "scenes":
        make_scenes = getattr(datasets, "make_scenes", None)
        if make_scenes is None:
            raise InputError("--data scenes needs tf_lrp.datasets.make_scenes (not in this "
                             "version of tf_lrp)")
        return make_scenes(n, size=shape[0], seed=datasets.SCENES_TEST_SEED)
    return datasets.make_shapes(n, size=shape[0], seed=datasets.SHAPES_TEST_SEED)


def _leading_rescaling(model) -> tuple[float, float] | None:
    """``(scale, offset)`` of a scalar ``Rescaling`` layer the model starts with, else ``None``.

    The shipped models start with one (they take pixel values 0..255); the data sets are in the
    range the network behind it was trained on, so they are mapped back through it.
    """
    import keras

    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if not layers or not isinstance(layers[0], keras.layers.Rescaling):
        return None
    scale, offset = layers[0].scale, layers[0].offset
    if np.ndim(scale) or np.ndim(offset):
        return None
    return float(scale), float(offset)


def to_model_input(setting: Setting, x: np.ndarray, model) -> tuple[Setting, np.ndarray]:
    """``x`` and the setting's bounds and numeric baselines in the model's input space."""
    rescaling = _leading_rescaling(model)
    if rescaling is None:
        return setting, x
    scale, offset = rescaling

    def back(v):
        return (np.asarray(v, np.float64) - offset) / scale

    def value(v):  # numbers are mapped, names ("mean", "blur") and None stay
        return v if v is None or isinstance(v, str) else float(back(v))

    setting = dataclasses.replace(setting, low=value(setting.low), high=value(setting.high),
                                  baseline=value(setting.baseline), zero=value(setting.zero),
                                  second=value(setting.second))
    return setting, back(x).astype(np.float32)
