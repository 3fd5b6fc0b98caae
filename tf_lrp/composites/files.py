"""Composite files: a composite as a versioned JSON document (:func:`save`, :func:`load`).

See :func:`load` for the format.
"""

from __future__ import annotations

import copy
import inspect
import json
import math
from pathlib import Path

import numpy as np

from tf_lrp import rules
from tf_lrp.composites.base import CONVOLUTIONS, ClassName, LayerMap
from tf_lrp.composites.presets import as_composite
from tf_lrp.errors import InputError
from tf_lrp.rules import Rule
from tf_lrp.storage import atomic_write

#: The ``"format"`` of a composite file.
FILE_FORMAT = "tf_lrp.composite"
#: The composite-file version this tf_lrp writes and reads.
FILE_VERSION = 1
_FILE_KEYS = ("format", "version", "first", "layers", "classes", "default", "meta")
_NONNEGATIVE = ("epsilon", "gamma", "stabilizer")


def _rule_classes() -> dict[str, type]:
    """The rules a composite file can name: the classes of :data:`tf_lrp.rules.RULES`."""
    return {cls.__name__: cls for cls in rules.RULES.values()}


def _rule_parameters(cls: type) -> dict[str, inspect.Parameter]:
    if cls.__init__ is rules.BasicRule.__init__:  # WSquare, Flat: no parameters of their own
        return {}
    return dict(inspect.signature(cls).parameters)


def _rule_text(cls: type) -> str:
    params = _rule_parameters(cls)
    return f"{cls.__name__}({', '.join(f'{k}={p.default!r}' for k, p in params.items())})"


def _number(value, where: str):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{where}: expected a finite number, got {value!r}")
    return value


def _bound(value, where: str):
    """A z^B bound: a number or (nested) lists of numbers (an array broadcastable to the input)."""
    if isinstance(value, list):
        return [_bound(v, where) for v in value]
    return _number(value, where)


def _rule_from_json(entry, where: str) -> Rule:
    """The rule an entry such as ``{"rule": "Gamma", "gamma": 0.25}`` names, checked."""
    classes = _rule_classes()
    if not isinstance(entry, dict) or not isinstance(entry.get("rule"), str):
        raise InputError(f'{where}: expected a rule object such as {{"rule": "Gamma", "gamma": '
                         f'0.25}} (or null), got {entry!r}')
    name = entry["rule"]
    cls = classes.get(name)
    if cls is None:
        alias = rules.RULES.get(name.replace("-", "_").lower())
        hint = f" (rules are named by class: {alias.__name__!r})" if alias else ""
        raise InputError(f"{where}: unknown rule {name!r}{hint}; rules: "
                         f"{', '.join(sorted(classes))}")
    params, kwargs = _rule_parameters(cls), {}
    for key, value in entry.items():
        if key == "rule":
            continue
        at = f"{where}.{key}"
        if key not in params:
            raise InputError(f"{where}: {name} has no parameter {key!r}; it takes "
                             f"{_rule_text(cls)}")
        default = params[key].default
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise InputError(f"{at}: expected true or false, got {value!r}")
        elif isinstance(default, (tuple, list)):
            if not isinstance(value, list):
                raise InputError(f"{at}: expected a list of numbers, got {value!r}")
            value = [_number(v, at) for v in value]
        elif cls is rules.ZBox:
            value = _bound(value, at)
            value = np.asarray(value, dtype=np.float32) if isinstance(value, list) else value
        else:
            value = _number(value, at)
            if key in _NONNEGATIVE and value < 0:
                raise InputError(f"{at}: must be >= 0, got {value!r}")
        kwargs[key] = value
    if cls is rules.ZBox:
        low, high = (kwargs.get(k, params[k].default) for k in ("low", "high"))
        try:
            ordered = bool(np.all(np.asarray(low) <= np.asarray(high)))
        except ValueError:
            raise InputError(f"{where}: low and high do not broadcast to each other") from None
        if not ordered:
            raise InputError(f"{where}: low must be <= high (the input bounds of z^B)")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise InputError(f"{where}: {err}") from None


def _jsonable(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return value


def _rule_to_json(rule: Rule, where: str) -> dict:
    cls = type(rule)
    if _rule_classes().get(cls.__name__) is not cls:
        raise InputError(f"{where}: {rule!r} is not a rule of tf_lrp.rules.RULES, so a composite "
                         "file cannot name it (add its class to tf_lrp.rules.RULES to save it)")
    return {"rule": cls.__name__, **{k: _jsonable(v) for k, v in rule.params.items()}}


def _parse(spec, source: str | None) -> tuple[list, Rule | None, Rule | None]:
    """Check a composite-file object; return the ``LayerMap`` arguments it stands for."""
    where = source or "composite file"
    if not isinstance(spec, dict):
        raise InputError(f"{where}: a composite file holds a JSON object, got "
                         f"{type(spec).__name__}")
    unknown = [k for k in spec if k not in _FILE_KEYS]
    if unknown:
        raise InputError(f"{where}: unknown key {unknown[0]!r}; the keys of a composite file: "
                         f"{', '.join(_FILE_KEYS)}")
    if spec.get("format") != FILE_FORMAT:
        raise InputError(f'{where}: not a composite file: expected "format": "{FILE_FORMAT}", '
                         f"got {spec.get('format')!r}")
    version = spec.get("version")
    if version != FILE_VERSION or isinstance(version, bool):
        raise InputError(f"{where}: composite-file version {version!r} is not supported: this "
                         f"tf_lrp reads version {FILE_VERSION}")
    mapping = []
    for section, key_type in (("layers", str), ("classes", ClassName)):
        entries = spec.get(section)
        entries = {} if entries is None else entries
        if not isinstance(entries, dict):
            raise InputError(f"{where}: {section!r} must be an object of name: rule")
        for key, entry in entries.items():
            if not key.strip():
                raise InputError(f"{where}: {section!r} has an empty name")
            mapping.append((key_type(key), _rule_from_json(entry, f'{where}: {section}["{key}"]')))
    first, default = (None if spec.get(k) is None else _rule_from_json(spec[k], f"{where}: {k}")
                      for k in ("first", "default"))
    if not isinstance(spec.get("meta", {}), (dict, type(None))):
        raise InputError(f"{where}: 'meta' must be a JSON object")
    return mapping, default, first


class FileComposite(LayerMap):
    """A composite given as a composite-file object (:func:`load`, :func:`from_spec`).

    It is the :class:`LayerMap` the file describes: ``first`` for the first layers with
    weights, then ``layers`` (by layer name), then ``classes`` (by class name, subclasses
    included), then ``default``.

    Attributes
    ----------
    spec
        The file's JSON object, checked (:func:`save` writes it back as it is).
    source
        The file it was read from, or ``None``.
    """

    def __init__(self, spec: dict, source: str | None = None):
        mapping, default, first = _parse(spec, source)
        super().__init__(mapping, default, first)
        self.spec = copy.deepcopy({k: spec[k] for k in _FILE_KEYS if k in spec})
        self.source = source

    def __repr__(self) -> str:
        text = super().__repr__()
        return text if self.source is None else text.replace("(", f"({self.source!r}: ", 1)


def from_spec(spec: dict) -> FileComposite:
    """The composite a composite-file object (a ``dict``, see :func:`load`) describes.

    Raises
    ------
    tf_lrp.InputError
        If the object is not a valid composite file; the message names the key, rule or
        parameter at fault and what is allowed.
    """
    return FileComposite(spec)


def to_spec(composite, meta: dict | None = None) -> dict:
    """The composite-file object of a composite.

    Parameters
    ----------
    composite
        A :class:`LayerMap` (the presets are), a :class:`FileComposite`, a composite-file
        ``dict``, a rule (for every layer with weights) or a registered name.
    meta
        Replaces the ``"meta"`` object.

    Raises
    ------
    tf_lrp.InputError
        If the composite cannot be written as a file: a composite class with its own
        ``rule_for``, a rule not in :data:`tf_lrp.rules.RULES`, or a ``LayerMap`` that maps a
        layer name after a class (a file checks names before classes).
    """
    if isinstance(composite, dict):
        spec = FileComposite(composite).spec
    elif isinstance(composite, FileComposite):
        spec = copy.deepcopy(composite.spec)
    else:
        composite = as_composite(composite)
        if not isinstance(composite, LayerMap) or type(composite).rule_for is not LayerMap.rule_for:
            raise InputError(f"{composite!r} cannot be written as a composite file: only a "
                             "LayerMap (the registered presets are) maps layers to rules the "
                             "way a file does")
        spec = {"format": FILE_FORMAT, "version": FILE_VERSION, "first": None, "layers": {},
                "classes": {}, "default": None}
        seen_class = None
        for key, rule in composite.mapping:
            for k in key if isinstance(key, tuple) and key not in (CONVOLUTIONS,) else (key,):
                if isinstance(k, str):
                    if seen_class is not None:
                        raise InputError(
                            f"{composite!r}: the name {k!r} is mapped after the class "
                            f"{seen_class!r}; a composite file checks names before classes, so "
                            "map the names first to save it")
                    spec["layers"].setdefault(k, _rule_to_json(rule, f'layers["{k}"]'))
                    continue
                name = "CONVOLUTIONS" if k == CONVOLUTIONS else \
                    k.name if isinstance(k, ClassName) else k.__name__
                seen_class = seen_class or name
                spec["classes"].setdefault(name, _rule_to_json(rule, f'classes["{name}"]'))
        for k in ("first", "default"):
            rule = getattr(composite, k)
            spec[k] = None if rule is None else _rule_to_json(rule, k)
        FileComposite(spec)  # what is written must load
    if meta is not None:
        try:
            spec["meta"] = json.loads(json.dumps(meta, allow_nan=False))
        except (TypeError, ValueError) as err:
            raise InputError(f"meta cannot be written as JSON: {err}") from None
    return spec


def _json(value, indent: str = "", expand: bool = False) -> str:
    """``value`` as JSON: on one line where it fits in 96 characters (and not ``expand``), else
    one item per line."""
    line = json.dumps(value, allow_nan=False)
    if not isinstance(value, (dict, list)) or not value or \
            (not expand and len(indent) + len(line) <= 96):
        return line
    inner = indent + "  "
    if isinstance(value, dict):
        items = [f"{inner}{json.dumps(k)}: {_json(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{indent}}}"
    return "[\n" + ",\n".join(inner + _json(v, inner) for v in value) + f"\n{indent}]"


def _text(spec: dict) -> str:
    """The file's text: one line per rule (``layers`` and ``classes`` one rule per line)."""
    items = []
    for key, value in spec.items():
        if key in ("layers", "classes") and value:
            rules_text = [f"    {json.dumps(k)}: {json.dumps(v, allow_nan=False)}"
                          for k, v in value.items()]
            items.append(f'  "{key}": {{\n' + ",\n".join(rules_text) + "\n  }")
        else:
            items.append(f"  {json.dumps(key)}: {_json(value, '  ', expand=key == 'meta')}")
    return "{\n" + ",\n".join(items) + "\n}\n"


def dumps(composite, meta: dict | None = None) -> str:
    """The text of the composite file of ``composite`` (see :func:`to_spec`, :func:`save`):
    JSON, one line per rule."""
    spec = to_spec(composite, meta)
    try:
        return _text(spec)
    except (TypeError, ValueError) as err:  # a NaN or a non-JSON object in meta
        raise InputError(f"the composite file cannot be written as JSON: {err}") from None


def save(composite, path, *, meta: dict | None = None) -> Path:
    """Write ``composite`` as a composite file (JSON), atomically; return the path.

    Parameters
    ----------
    composite
        What :func:`to_spec` takes: a :class:`LayerMap` or preset, a loaded composite, a
        composite-file ``dict``, a rule or a registered name.
    path
        The file to write (replaced whole, or left as it was: :func:`tf_lrp.storage.atomic_write`).
    meta
        A JSON object stored under ``"meta"`` (replacing the composite's own).

    Examples
    --------
    >>> composites.save(composites.EpsilonGammaBox(low=0.0, high=1.0), "egb.json")
    >>> analyzer = tf_lrp.Analyzer(model, composites.load("egb.json"))
    """
    text = dumps(composite, meta).encode("utf-8")
    path = Path(path)
    atomic_write(path, lambda stream: stream.write(text))
    return path


def load(path) -> FileComposite:
    """Read a composite file (JSON), check it and return its composite.

    The format (version 1)::

        {"format": "tf_lrp.composite", "version": 1,
         "first":   {"rule": "ZBox", "low": 0.0, "high": 1.0},
         "layers":  {"conv2": {"rule": "Gamma", "gamma": 0.1}},
         "classes": {"Dense": {"rule": "Epsilon", "epsilon": 0.01},
                     "CONVOLUTIONS": {"rule": "ZPlus"}},
         "default": {"rule": "Epsilon", "epsilon": 1e-06},
         "meta":    {"metric": "aopc", "score": 0.41, "model_sha256": "..."}}

    A rule is an object naming a class of :data:`tf_lrp.rules.RULES` (``Epsilon``, ``Zero``,
    ``Gamma``, ``AlphaBeta``, ``ZPlus``, ``ZBox``, ``WSquare``, ``Flat``, ``Pass``, ...) and
    its parameters (omitted ones take the class's defaults; ``ZBox`` bounds may be nested
    lists, an array broadcastable to the input). A layer gets the first of:

    - ``first``: the first layers with weights reached from a model input (``null``: none);
    - ``layers``: by layer name (an exact class name also matches, as with ``--rule``);
    - ``classes``: by class name, the class's subclasses included; ``"CONVOLUTIONS"`` and
      ``"DENSE"`` name the groups :data:`CONVOLUTIONS` and :data:`DENSE`;
    - ``default``: any other layer with weights (``null``: such a layer is an error).

    Layers without weights keep their fixed handling unless ``layers`` or ``classes`` name
    them. ``meta`` is free (what wrote the file, its scores); only ``format`` and ``version``
    are required. A file written by :func:`save` is read back to the same object, and saved
    again to the same bytes.

    Raises
    ------
    tf_lrp.InputError
        If the file cannot be read, is not JSON, not a composite file, of another version, or
        names an unknown key, rule or parameter, or a bad value; the message names the fault
        and what is allowed.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a composite file (not UTF-8 text)") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read the composite file "
                         f"({err.strerror or err})") from None
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not a composite file: invalid JSON at line {err.lineno}, "
                         f"column {err.colno} ({err.msg})") from None
    return FileComposite(spec, source=str(path))
