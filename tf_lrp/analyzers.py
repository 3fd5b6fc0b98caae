"""All attribution methods behind one call signature: ``method(model)(x, target=None)``.

LRP itself is :class:`tf_lrp.Analyzer`; the gradient methods live in :mod:`tf_lrp.gradients`,
``SmoothGrad``, ``IntegratedGradients`` and ``Random`` in :mod:`tf_lrp.baselines`. This module
gathers them (imports go one way: ``analyzers`` -> ``baselines`` -> ``gradients`` -> ``base``).
"""

from __future__ import annotations

from tf_lrp.analyzer import Analyzer
from tf_lrp.base import BaseAnalyzer
from tf_lrp.baselines import IntegratedGradients, Random, SmoothGrad
from tf_lrp.gradients import Gradient, GradientXInput, Sensitivity

__all__ = ["Analyzer", "BaseAnalyzer", "Gradient", "GradientXInput", "IntegratedGradients",
           "Random", "Sensitivity", "SmoothGrad"]
