"""Quantitative evaluation of explanations: faithfulness, localisation, randomisation,
conservation, and what each explanation costs.

Every metric returns one score per sample, so results are reported as mean ± standard error.
One module per metric family; each module's docstring gives the definitions:

:mod:`~tf_lrp.evaluate.flipping`
    :func:`pixel_flipping` (Bach et al. 2015; Samek et al. 2017): patches replaced by a removal
    value (a number, ``"mean"`` colour, ``"blur"``), most relevant first; AOPC, higher is better.
:mod:`~tf_lrp.evaluate.road`
    :func:`road` (Rong et al. 2022, ROAD): pixels removed by noisy linear imputation
    (:func:`linear_imputation`), MoRF (higher AOPC is better) or LeRF (lower is better).
:mod:`~tf_lrp.evaluate.irof`
    :func:`irof` (Rieger & Hansen 2020): superpixels removed by mean relevance; area over the
    normalised class-probability curve, higher is better.
:mod:`~tf_lrp.evaluate.localisation`
    :func:`relevance_mass_accuracy`, :func:`relevance_rank_accuracy` (Arras et al. 2022).
:mod:`~tf_lrp.evaluate.randomisation`
    :func:`model_randomisation` (Adebayo et al. 2018; top-down or bottom-up cascade, Spearman
    :func:`spearman`) and :func:`efficient_mprt` (Hedström et al. 2023: the rise in
    :func:`explanation_entropy` from the original to the fully randomised model).
:mod:`~tf_lrp.evaluate.conservation`
    :func:`conservation`: ``sum R`` against ``f_c(x)``.
:mod:`~tf_lrp.evaluate.cost`
    :func:`relative_cost`: milliseconds per explanation and the ratio to one plain gradient.
:mod:`~tf_lrp.evaluate.report`
    :func:`run_report` runs all of them for the methods of :mod:`~tf_lrp.evaluate.methods` on a
    shipped data set (:data:`DATASETS`) and writes markdown tables, JSON and PNG plots;
    ``tf-lrp evaluate``, ``scripts/evaluate.py`` and ``python -m tf_lrp.evaluate`` call it
    through :func:`main` (:mod:`~tf_lrp.evaluate.cli`).

Imports go one way (``report`` -> metrics -> ``_common``), and importing this package does not
import TensorFlow.
"""

from __future__ import annotations

from tf_lrp.evaluate._common import mean_se
from tf_lrp.evaluate.cli import add_cli_arguments, main, run_cli
from tf_lrp.evaluate.conservation import Conservation, conservation
from tf_lrp.evaluate.cost import Cost, relative_cost, time_per_explanation
from tf_lrp.evaluate.flipping import FlipCurves, pixel_flipping
from tf_lrp.evaluate.irof import grid_segments, irof
from tf_lrp.evaluate.localisation import relevance_mass_accuracy, relevance_rank_accuracy
from tf_lrp.evaluate.methods import DATASETS, METHODS, TOKEN_METHODS, Setting
from tf_lrp.evaluate.randomisation import (
    ComplexityRise,
    Randomisation,
    efficient_mprt,
    explanation_entropy,
    model_randomisation,
    spearman,
)
from tf_lrp.evaluate.report import run_report
from tf_lrp.evaluate.road import linear_imputation, road

__all__ = [
    "DATASETS",
    "METHODS",
    "TOKEN_METHODS",
    "ComplexityRise",
    "Conservation",
    "Cost",
    "FlipCurves",
    "Randomisation",
    "Setting",
    "add_cli_arguments",
    "conservation",
    "efficient_mprt",
    "explanation_entropy",
    "grid_segments",
    "irof",
    "linear_imputation",
    "main",
    "mean_se",
    "model_randomisation",
    "pixel_flipping",
    "relative_cost",
    "relevance_mass_accuracy",
    "relevance_rank_accuracy",
    "road",
    "run_cli",
    "run_report",
    "spearman",
    "time_per_explanation",
]
