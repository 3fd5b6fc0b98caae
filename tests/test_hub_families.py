"""Every KerasHub family the issue names, as the task model a user loads from a local preset
directory (``save_to_preset`` then ``from_preset``; tiny configs, random weights, no download):
logits equal to the model's, relevance finite and not all zero, padding without relevance.

DeBERTaV3's TensorFlow code path calls ``tf.gather`` on its relative-position scores; the
flattening reads it as the ``keras.ops.take_along_axis`` of its other backends.
``scripts/hub.py`` maps every backbone class (benchmarks/HUB.md).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tf_lrp
from tf_lrp import composites
from tf_lrp.errors import UnsupportedLayerError

keras_hub = pytest.importorskip("keras_hub")
models = keras_hub.models

VOCAB, LENGTH, IMAGE = 40, 6, (32, 32, 3)
TEXT = dict(vocabulary_size=VOCAB, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=12,
            max_sequence_length=8)
DECODER = dict(vocabulary_size=VOCAB, num_layers=1, num_query_heads=2, num_key_value_heads=1,
               hidden_dim=8, intermediate_dim=12)
VISION = dict(num_layers=1, num_heads=2, hidden_dim=8, patch_size=8, image_shape=IMAGE)
CNN = dict(image_shape=IMAGE)

CLASSIFIERS = {
    "bert": lambda: models.BertTextClassifier(models.BertBackbone(**TEXT), 3, activation=None,
                                             preprocessor=None),
    "distil_bert": lambda: models.DistilBertTextClassifier(
        models.DistilBertBackbone(**TEXT), 3, activation=None, preprocessor=None),
    "roberta": lambda: models.RobertaTextClassifier(models.RobertaBackbone(**TEXT), 3,
                                                   activation=None, preprocessor=None),
    "albert": lambda: models.AlbertTextClassifier(models.AlbertBackbone(embedding_dim=8, **TEXT),
                                                 3, activation=None, preprocessor=None),
    "deberta_v3": lambda: models.DebertaV3TextClassifier(
        models.DebertaV3Backbone(bucket_size=4, **TEXT), 3, activation=None, preprocessor=None),
}
CAUSAL = {
    "gpt2": lambda: models.GPT2CausalLM(models.GPT2Backbone(**TEXT), preprocessor=None),
    "llama": lambda: models.LlamaCausalLM(models.LlamaBackbone(**DECODER), preprocessor=None),
    "llama3": lambda: models.Llama3CausalLM(models.Llama3Backbone(**DECODER), preprocessor=None),
    "mistral": lambda: models.MistralCausalLM(models.MistralBackbone(sliding_window=3, **DECODER),
                                             preprocessor=None),
    "gemma": lambda: models.GemmaCausalLM(models.GemmaBackbone(head_dim=4, **DECODER),
                                         preprocessor=None),
    "gemma3": lambda: models.Gemma3CausalLM(backbone=models.Gemma3Backbone(
        head_dim=4, image_size=16, **DECODER), preprocessor=None),
    "qwen2": lambda: models.QwenCausalLM(models.QwenBackbone(**DECODER), preprocessor=None),
}
IMAGES = {
    "vit": lambda: models.ViTImageClassifier(models.ViTBackbone(mlp_dim=12, **VISION), 3,
                                             activation=None, preprocessor=None),
    "deit": lambda: models.DeiTImageClassifier(models.DeiTBackbone(intermediate_dim=12, **VISION),
                                               3, activation=None, preprocessor=None),
    "swin": lambda: models.SwinTransformerImageClassifier(models.SwinTransformerBackbone(
        image_shape=IMAGE, patch_size=4, embed_dim=8, depths=(1, 1), num_heads=(2, 2),
        window_size=4, drop_path=0.0), 3, activation=None, preprocessor=None),
    "efficientnet": lambda: models.EfficientNetImageClassifier(models.EfficientNetBackbone(
        **{f"stackwise_{k}": v for k, v in dict(
            kernel_sizes=[3, 3], num_repeats=[1, 1], input_filters=[8, 8], output_filters=[8, 16],
            expansion_ratios=[1, 2], squeeze_and_excite_ratios=[0.0, 0.25], strides=[1, 2],
            block_types=["fused", "unfused"], force_input_filters=[0, 0],
            nores_option=[False, False]).items()},
        width_coefficient=1.0, depth_coefficient=1.0, num_features=16), 3, activation=None,
        preprocessor=None),
    "mobilenet_v3": lambda: models.MobileNetImageClassifier(models.MobileNetBackbone(
        **{f"stackwise_{k}": v for k, v in dict(
            expansion=[[16], [32]], num_blocks=[1, 1], num_filters=[[8], [16]],
            kernel_size=[[3], [3]], num_strides=[[2], [2]], se_ratio=[[None], [0.25]],
            activation=[["relu"], ["hard_swish"]], padding=[[1], [1]]).items()},
        output_num_filters=16, depthwise_filters=8, depthwise_stride=2, depthwise_residual=False,
        last_layer_filter=16, squeeze_and_excite=0.5, input_num_filters=8, **CNN), 3,
        activation=None, preprocessor=None),
    "resnet_v1": lambda: models.ResNetImageClassifier(models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 16],
        stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block",
        use_pre_activation=False, **CNN), 3, activation=None, preprocessor=None),
    "resnet_v2": lambda: models.ResNetImageClassifier(models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 16],
        stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="bottleneck_block",
        use_pre_activation=True, **CNN), 3, activation=None, preprocessor=None),
    "cspnet": lambda: models.CSPNetImageClassifier(models.CSPNetBackbone(
        stem_filters=8, stem_kernel_size=3, stem_strides=1, stem_padding="same",
        stackwise_depth=[1, 1], stackwise_strides=2, stackwise_num_filters=[8, 16],
        block_type="dark_block", stage_type="csp", bottle_ratio=(0.5, 1.0),
        block_ratio=(1.0, 0.5), expand_ratio=(2.0, 1.0), **CNN), 3, activation=None,
        preprocessor=None),
}


#: KerasHub 0.32 does not load this tiny EfficientNetImageClassifier back, from a preset nor
#: from a .keras file ("Layer 'top_conv' expected 1 variables, but received 0"): that family is
#: tested on the live model
NO_PRESET = {"efficientnet"}


def _from_preset(build, tmp_path, family=""):
    keras.utils.set_random_seed(21)
    task = build()
    rng = np.random.default_rng(22)
    for v in task.weights:  # asymmetric weights: every bias and norm scale non-default
        if "variance" in v.path:
            v.assign(rng.uniform(0.5, 1.5, v.shape).astype(v.dtype))
        else:
            v.assign(rng.normal(0.0, 0.4, v.shape).astype(v.dtype))
    if family in NO_PRESET:
        return task
    task.save_to_preset(str(tmp_path / "preset"))
    return tf_lrp.load_model(tmp_path / "preset")


def _tokens():
    rng = np.random.default_rng(23)
    ids = rng.integers(1, VOCAB, (2, LENGTH)).astype("int32")
    mask = np.ones((2, LENGTH), "int32")
    ids[1, -2:], mask[1, -2:] = 0, 0
    return ids, mask


def _check(task, x, target, analyzer, composite):
    relevance = analyzer(x, target=target)
    logits = keras.ops.convert_to_numpy(task(x)).reshape(2, -1)
    np.testing.assert_allclose(analyzer.predict(x), logits, rtol=1e-4,
                               atol=1e-5 * np.abs(logits).max())
    flat = np.concatenate([np.asarray(r, np.float64).reshape(2, -1) for r in (
        relevance if isinstance(relevance, list) else [relevance])], axis=1)
    assert np.isfinite(flat).all() and (np.abs(flat).max(axis=1) > 0).all(), composite
    return relevance


@pytest.mark.parametrize("family", sorted(CLASSIFIERS))
def test_text_classifier(family, tmp_path):
    task = _from_preset(CLASSIFIERS[family], tmp_path)
    ids, mask = _tokens()
    x = {"token_ids": ids, "padding_mask": mask}
    if "segment_ids" in [kt.name for kt in task.inputs]:
        x["segment_ids"] = np.zeros_like(ids)
    a = tf_lrp.Analyzer(task, composites.AttnLRP(epsilon=0.0))
    r = _check(task, x, [1, 2], a, "attn_lrp")
    tokens = r[a.for_shape([x[n].shape[1:] for n in a._input_names]).graph.input_names.index(
        "token_ids")]
    assert not tokens[1, -2:].any()  # padding gets no relevance


@pytest.mark.parametrize("family", sorted(CAUSAL))
def test_causal_lm_next_token(family, tmp_path):
    task = _from_preset(CAUSAL[family], tmp_path)
    ids, mask = _tokens()
    x = {"token_ids": ids, "padding_mask": mask}
    a = tf_lrp.Analyzer(task, composites.AttnLRP(epsilon=0.0))
    target = tf_lrp.hub.next_token_targets(a.predict(x), mask)
    assert (target // task.backbone.vocabulary_size == [LENGTH - 1, LENGTH - 3]).all()
    r = _check(task, x, target, a, "attn_lrp")
    tokens = r[a.for_shape([(LENGTH,), (LENGTH,)]).graph.input_names.index("token_ids")]
    assert not tokens[1, -2:].any()


@pytest.mark.parametrize("family", sorted(IMAGES))
def test_image_classifier(family, tmp_path):
    task = _from_preset(IMAGES[family], tmp_path, family)
    x = np.random.default_rng(24).uniform(0, 1, (2, *IMAGE)).astype("float32")
    composite = composites.AttnLRP(epsilon=0.0) if family in ("vit", "deit", "swin") else \
        "epsilon_plus"
    _check(task, x, [0, 2], tf_lrp.Analyzer(task, composite), composite)


def test_electra_backbone_with_a_head_from_a_keras_file(tmp_path):
    """ELECTRA has no task model in KerasHub: its backbone with a head, saved as .keras."""
    keras.utils.set_random_seed(25)
    b = models.ElectraBackbone(vocab_size=VOCAB, embedding_dim=8, **{
        k: v for k, v in TEXT.items() if k != "vocabulary_size"})
    model = keras.Model(b.inputs, keras.layers.Dense(3)(b.outputs[1]))  # the pooled output
    model.save(tmp_path / "electra.keras")
    loaded = tf_lrp.load_model(tmp_path / "electra.keras")
    ids, mask = _tokens()
    x = {"token_ids": ids, "padding_mask": mask, "segment_ids": np.zeros_like(ids)}
    _check(loaded, x, [0, 2], tf_lrp.Analyzer(loaded, composites.AttnLRP(epsilon=0.0)),
           "attn_lrp")


def test_deberta_v3_conserves_under_cp_lrp_without_biases(tmp_path):
    """DeBERTaV3's disentangled attention (content-to-position and position-to-content
    scores gathered by relative position) flattened: with every bias zero and the attention
    weights held (CP-LRP), relevance is conserved exactly, so no share is lost in the gathered
    scores; AttnLRP's softmax rule is not conservative (it keeps 59-72 % here)."""
    task = _from_preset(CLASSIFIERS["deberta_v3"], tmp_path)
    for v in task.weights:
        if v.path.endswith(("bias", "beta")):
            v.assign(np.zeros(v.shape, v.dtype))
    ids, mask = _tokens()
    x = {"token_ids": ids, "padding_mask": mask}
    logits = keras.ops.convert_to_numpy(task(x))[[0, 1], [2, 0]]
    for composite, low in ((composites.CPLRP(epsilon=0.0), 0.9999), (composites.AttnLRP(), 0.5)):
        a = tf_lrp.Analyzer(task, composite)
        total = sum(np.asarray(r).reshape(2, -1).sum(1) for r in a(x, target=[2, 0]))
        ratio = total / logits
        assert (ratio > low).all() and (ratio < 1.0001).all(), (composite, ratio)


def test_mixture_of_experts_and_fourier_mixing_are_refused_with_the_reason():
    moe = models.QwenMoeBackbone(moe_intermediate_dim=8, num_experts=2, top_k=1,
                                 shared_expert_intermediate_dim=8, **DECODER)
    with pytest.raises(UnsupportedLayerError, match="selects by rank.*no rule"):
        tf_lrp.Analyzer(moe, composites.AttnLRP())
    fnet = models.FNetBackbone(**{k: v for k, v in TEXT.items() if k != "num_heads"})
    with pytest.raises(UnsupportedLayerError, match="Fourier.*no rule"):
        tf_lrp.Analyzer(fnet, composites.AttnLRP(), output=0)
