"""Parity with LXT (AttnLRP, efficient mode) on KerasHub transformers.

``tf_lrp.Analyzer(model, AttnLRP(epsilon=0.0))`` on tiny KerasHub backbones with a head must
give the token relevance of LXT 2.1's efficient mode on the same weights. LXT needs PyTorch,
so the reference is tests/reference_hub.py: the same rules as gradient x input with modified
backward passes, written in plain TensorFlow (float64) from the layers' weights, without
KerasHub's ``call`` methods and without tf_lrp.

Cases: Llama (RMSNorm, RoPE, grouped-query attention 4 query / 2 key-value heads, SwiGLU,
Dense head on the last position, left padding), BERT (LayerNorm, GELU, position and segment
embeddings, tanh pooler, Dense head, right padding) and Gemma 1 (RMSNorm with ``1 + w``, GeGLU,
``sqrt(d)`` embedding scale, tied LM head). Every weight is random and non-default (norm scales
not 1, biases not 0), the two samples differ (padding, targets).

Tolerance: ``rtol = 1e-4`` and ``atol = 1e-4 * max |R_ref|`` (tf_lrp runs in float32; measured
differences are about 1e-6 of max |R|). The comparison can fail: each of the reference's
mutants (CP-LRP, softmax passed by the identity, no uniform split, gradient through the
normalizing factor, plain gradient through the activations) differs from tf_lrp by more than
100 times the tolerance, and so does BERT's relevance if the position embedding's share went
to the tokens.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import keras
import numpy as np
import pytest
import reference_hub as ref

import tf_lrp
from tf_lrp import composites

keras_hub = pytest.importorskip("keras_hub")

L = 6  # sequence length
VOCAB = 50
RTOL = 1e-4  # relative to each entry
ATOL = 1e-4  # relative to max |R_ref| of the case
CAUGHT = 100 * ATOL  # a wrong rule must move the relevance by more than this (of max |R_ref|)


def _randomize(model, seed: int) -> None:
    """Random, non-default weights: norm scales around 1 (not 1), biases and betas not 0,
    unit-normal embeddings, kernels ~ 1.5 / sqrt(fan_in) (attention neither uniform nor
    one-hot, activations outside their linear range)."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        shape, name = tuple(v.shape), v.path.rsplit("/", 1)[-1]
        if name in ("scale", "gamma"):
            value = 1.0 + 0.3 * rng.normal(size=shape)
        elif name in ("bias", "beta"):
            value = 0.3 * rng.normal(size=shape)
        elif name == "embeddings":
            value = rng.normal(size=shape)
        else:
            value = rng.normal(size=shape) * 1.5 / np.sqrt(np.prod(shape) // shape[-1])
        v.assign(value.astype("float32"))


class Case(NamedTuple):
    model: keras.Model
    x: list  # model inputs
    target: np.ndarray
    reference: object  # Rules -> ref.Result
    compare: dict  # reference relevance name -> index of the model input it belongs to
    zero_inputs: tuple  # indices of inputs that must get no relevance (padding masks)
    padding: np.ndarray  # (n, L) 1 for real tokens


def _ids(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, VOCAB, (2, L)).astype("int32")


def _left_padded() -> np.ndarray:
    pad = np.ones((2, L), "int32")
    pad[1, :2] = 0  # decoder-style left padding: sample 2 starts at position 2
    return pad


def _llama() -> Case:
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.LlamaBackbone(
        vocabulary_size=VOCAB, num_layers=2, num_query_heads=4, num_key_value_heads=2,
        hidden_dim=16, intermediate_dim=24)
    tok = keras.Input((None,), dtype="int32")
    pm = keras.Input((None,), dtype="int32")
    h = backbone({"token_ids": tok, "padding_mask": pm})
    head = keras.layers.Dense(3)
    model = keras.Model([tok, pm], head(h[:, -1]))
    _randomize(model, 1)
    ids, pad, target = _ids(3), _left_padded(), np.array([2, 0])
    return Case(model, [ids, pad], target,
                lambda rules: ref.llama(backbone, head, ids, pad, target, rules),
                {"tokens": 0}, (1,), pad)


def _bert() -> Case:
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=VOCAB, num_layers=2, num_heads=2, hidden_dim=8, intermediate_dim=16,
        max_sequence_length=12)
    tok, seg, pm = (keras.Input((None,), dtype="int32") for _ in range(3))
    out = backbone({"token_ids": tok, "segment_ids": seg, "padding_mask": pm})
    head = keras.layers.Dense(3)
    model = keras.Model([tok, seg, pm], head(out["pooled_output"]))
    _randomize(model, 2)
    ids = _ids(4)
    segments = np.array([[0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 0, 0]], "int32")
    pad = np.ones((2, L), "int32")
    pad[1, 4:] = 0  # encoder-style right padding
    target = np.array([1, 2])
    return Case(model, [ids, segments, pad], target,
                lambda rules: ref.bert(backbone, head, ids, segments, pad, target, rules),
                {"tokens": 0, "segments": 1}, (2,), pad)


def _gemma() -> Case:
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.GemmaBackbone(
        vocabulary_size=VOCAB, num_layers=2, num_query_heads=4, num_key_value_heads=2,
        hidden_dim=16, intermediate_dim=48, head_dim=4)
    tok = keras.Input((None,), dtype="int32")
    pm = keras.Input((None,), dtype="int32")
    h = backbone({"token_ids": tok, "padding_mask": pm})
    model = keras.Model([tok, pm], backbone.token_embedding(h[:, -1], reverse=True))
    _randomize(model, 3)
    ids, pad, target = _ids(5), _left_padded(), np.array([7, 31])
    return Case(model, [ids, pad], target,
                lambda rules: ref.gemma(backbone, ids, pad, target, rules),
                {"tokens": 0}, (1,), pad)


BUILDERS = {"llama": _llama, "bert": _bert, "gemma": _gemma}


@functools.cache
def _case(name: str) -> Case:
    return BUILDERS[name]()


@functools.cache
def _analyzer(name: str, composite: str = "attnlrp"):
    case = _case(name)
    comp = (composites.AttnLRP(epsilon=0.0) if composite == "attnlrp"
            else composites.CPLRP(epsilon=0.0))
    return tf_lrp.Analyzer(case.model, comp)


@functools.cache
def _relevance(name: str, composite: str = "attnlrp") -> list:
    case = _case(name)
    return _analyzer(name, composite)(case.x, target=case.target)


@functools.cache
def _reference(name: str, rules: ref.Rules = ref.LXT) -> ref.Result:
    return _case(name).reference(rules)


def _scale(result: ref.Result) -> float:
    return float(np.abs(result.relevance["tokens"]).max())


def _shapes(case: Case) -> list:
    return [a.shape[1:] for a in case.x]


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_forward_matches_keras_and_reference(name):
    case = _case(name)
    y = case.model(case.x).numpy()
    predicted = _analyzer(name).for_shape(_shapes(case)).predict(case.x)
    np.testing.assert_allclose(predicted, y, rtol=1e-5, atol=1e-5 * np.abs(y).max())
    # the reference's forward pass (float64, written out) is KerasHub's
    np.testing.assert_allclose(_reference(name).logits, y, rtol=1e-4, atol=1e-5 * np.abs(y).max())


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_token_relevance_matches_lxt_reference(name):
    case = _case(name)
    R, expected = _relevance(name), _reference(name)
    scale = _scale(expected)
    assert scale > 0.1
    for key, index in case.compare.items():
        np.testing.assert_allclose(R[index], expected.relevance[key], rtol=RTOL,
                                   atol=ATOL * scale, err_msg=f"{name}: {key}")
    for index in case.zero_inputs:
        assert not np.any(R[index]), "padding masks get no relevance"
    # padding positions are never read by the explained position: no relevance
    assert not np.any(R[0][case.padding == 0])
    assert np.all(R[0][case.padding == 1] != 0)


@pytest.mark.parametrize("mutant", sorted(ref.MUTANTS))
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_wrong_rules_are_caught(name, mutant):
    """Each rule matters on each model: the test above would fail if tf_lrp applied the
    mutant's rule instead of LXT's."""
    case = _case(name)
    scale = _scale(_reference(name))
    wrong = _reference(name, ref.MUTANTS[mutant])
    gap = np.abs(wrong.relevance["tokens"] - _relevance(name)[case.compare["tokens"]]).max()
    assert gap > CAUGHT * scale, f"{name}/{mutant}: {gap / scale:.2e} of max |R|"


def test_bert_position_embedding_share_is_caught():
    """The position embedding is a constant absorbing its share; if its share went to the
    tokens instead, the relevance would differ by more than 100 times the tolerance."""
    expected = _reference("bert")
    share = np.abs(expected.relevance["positions"]).max()
    assert share > CAUGHT * _scale(expected)


def test_llama_cp_lrp_matches_lxt_and_conserves():
    """CP-LRP (LXT: no gradient through q, k and the MLP gate) on Llama: parity with the
    reference, and conservation. Nothing reaches the softmax and every other rule of this
    bias-free backbone conserves, so the token relevance sums to the selected logit minus the
    head bias (the bias absorbs its share under LRP-0)."""
    case = _case("llama")
    R = _relevance("llama", "cplrp")
    expected = _reference("llama", ref.CP)
    scale = _scale(expected)
    np.testing.assert_allclose(R[0], expected.relevance["tokens"], rtol=RTOL, atol=ATOL * scale)
    assert not np.any(R[1])
    logits = case.model(case.x).numpy()
    head = next(la for la in case.model.layers if isinstance(la, keras.layers.Dense))
    bias = head.bias.numpy()
    selected = logits[np.arange(2), case.target] - bias[case.target]
    np.testing.assert_allclose(R[0].sum(1), selected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(expected.relevance["tokens"].sum(1), selected, rtol=1e-5)
    # AttnLRP is not conservative (the softmax rule): the test above can fail
    attn = _relevance("llama")[0].sum(1)
    assert np.abs(attn - selected).max() > 1e-2 * np.abs(selected).max()
