"""Composites: which rule each layer gets, by layer type and position.

A composite answers :meth:`Composite.rule_for` for every node of the canonized graph. Layers
without weights that tf_lrp knows (activations, pooling, ``Add``, reshapes) get their fixed
handling unless a composite maps their class explicitly.

Presets are registered by snake_case name (:func:`get`, :func:`names`)::

    composites.get("epsilon_gamma_box", low=-1.0, high=1.0)

A composite is saved as a versioned JSON *composite file* and read back with :func:`save` and
:func:`load` (the format: :func:`load`)::

    composites.save(composites.EpsilonGammaBox(low=0.0, high=1.0), "egb.json")
    analyzer = tf_lrp.Analyzer(model, composites.load("egb.json"))

The package: :mod:`~tf_lrp.composites.base` (the composite classes), :mod:`~tf_lrp.composites.
presets` (the registered composites) and :mod:`~tf_lrp.composites.files` (composite files).
"""

from tf_lrp.composites.base import (
    CONVOLUTIONS,
    DENSE,
    ClassName,
    Composite,
    LayerMap,
    Overrides,
)
from tf_lrp.composites.files import (
    FILE_FORMAT,
    FILE_VERSION,
    FileComposite,
    dumps,
    from_spec,
    load,
    save,
    to_spec,
)
from tf_lrp.composites.presets import (
    CPLRP,
    NORMALIZATIONS,
    AttnLRP,
    DeepTaylor,
    EpsilonAlpha2Beta1,
    EpsilonGammaBox,
    EpsilonPlus,
    EpsilonPlusFlat,
    as_composite,
    describe,
    get,
    names,
    register,
)

__all__ = [
    "CONVOLUTIONS", "CPLRP", "DENSE", "FILE_FORMAT", "FILE_VERSION", "NORMALIZATIONS",
    "AttnLRP", "ClassName", "Composite", "DeepTaylor", "EpsilonAlpha2Beta1", "EpsilonGammaBox",
    "EpsilonPlus", "EpsilonPlusFlat", "FileComposite", "LayerMap", "Overrides", "as_composite",
    "describe", "dumps", "from_spec", "get", "load", "names", "register", "save", "to_spec",
]
