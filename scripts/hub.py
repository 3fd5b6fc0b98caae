"""Every KerasHub backbone class, tiny and randomly initialised, explained by tf_lrp.

    python scripts/hub.py                            # every class, then benchmarks/HUB.md
    python scripts/hub.py --models BertBackbone,ViTBackbone --out /tmp/hub.md
    python scripts/hub.py --report-only              # rewrite the report from the results

Every class in `keras_hub.models` that subclasses `keras_hub.models.Backbone` is built from its
tiny configuration in `TINY` (vocabulary 64, 1-2 layers, hidden size 8-16, 2 heads, images of
32 px where the class accepts them; random weights, no preset), in a child process of its own (a
crash or time-out costs one row; a build over 60 s is skipped). A head on the backbone's own
inputs averages the sequence or feature map over its positions, then `Dense(3)` (dual encoders:
both towers' embeddings). The batch: 2 samples, token ids random in 1..63 over 8 positions, the
second sample padded (mask 0, token 0) over its last 3; other floats (images, audio, latents)
uniform in [0, 1). The analyzer is `tf_lrp.Analyzer(model, AttnLRP(epsilon=0.0))`
(`"epsilon_plus"` for the convolutional families in `CNN_FAMILIES`), explaining each sample's
highest logit. Recorded: the outcome (the exception's first line where tf_lrp refuses);
sum(R)/logit per sample (R summed over all model inputs); the same under `CPLRP(epsilon=0.0)`
as a conservation check (attention weights and gates held constant, LRP-0 elsewhere: 1 unless
relevance goes to constant operands, such as learned position embeddings or class tokens added
to the input's embedding, which are not model inputs; biases are zero); max|a.predict(x) -
model.predict(x)|; the graph build time (`Analyzer` + `for_shape`); the explanation's time over
that of a plain `tf.GradientTape` gradient of the same logits to the float inputs and the
embedding matrices (both traced; medians of 3 calls after a warm-up).

Each child writes `<results>/<class>.json`; the parent writes `--out` (default
`benchmarks/HUB.md`) from every result there.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import inspect
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import timeit
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SEQ, VOCAB, PAD, IMG, BATCH, BUILD_LIMIT = 8, 64, 3, 32, 2, 60.0
CNN_FAMILIES = {"resnet", "vgg", "densenet", "cspnet", "efficientnet", "mobilenet", "mobilenetv5",
                "xception", "hgnetv2", "basnet", "deeplab_v3", "retinanet"}


class Sub:
    """A sub-model argument (an encoder inside a backbone), built when the backbone is."""

    def __init__(self, path: str, **kwargs: Any) -> None:
        self.path, self.kwargs = path, kwargs

    def build(self) -> Any:
        module, _, name = self.path.rpartition(".")
        return getattr(importlib.import_module("keras_hub." + module), name)(**built(self.kwargs))


def built(kwargs: dict) -> dict:
    return {k: v.build() if isinstance(v, Sub) else v for k, v in kwargs.items()}


def drop(d: dict, *keys: str, **extra: Any) -> dict:
    return {**{k: v for k, v in d.items() if k not in keys}, **extra}


I3 = (IMG, IMG, 3)
L = dict(num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32)
T = dict(L, vocabulary_size=VOCAB)
TD = dict(T, dropout=0.0, max_sequence_length=SEQ)
G = dict(drop(T, "num_heads"), num_query_heads=2, num_key_value_heads=1)
TXT = dict(T, embedding_dim=16, max_sequence_length=SEQ)
VIS = dict(L, patch_size=8, image_shape=I3)
RESNET = Sub("models.ResNetBackbone", input_conv_filters=[64], input_conv_kernel_sizes=[3],
             block_type="basic_block", stackwise_num_filters=[64, 8, 16, 16],
             stackwise_num_blocks=[1, 1, 1, 1], stackwise_num_strides=[1, 2, 2, 2])
MIT = dict(layerwise_depths=[1, 1], image_shape=I3, hidden_dims=[8, 16], num_layers=2,
           layerwise_num_heads=[1, 2], layerwise_sr_ratios=[4, 2], max_drop_path_rate=0.0,
           layerwise_patch_sizes=[7, 3], layerwise_strides=[4, 2])
HGNET = dict(stem_channels=[3, 8, 8], embedding_size=8, depths=[1, 1], hidden_sizes=[16, 32],
             stackwise_stage_filters=[[8, 8, 16, 1, 1, 3], [16, 8, 32, 1, 1, 3]],
             apply_downsample=[False, True], use_lightweight_conv_block=[False, False],
             use_learnable_affine_block=False, hidden_act="relu")
SMOL = dict(drop(G, "num_query_heads"), num_attention_heads=2, attention_bias=False,
            attention_dropout=0.0, rope_layer_enabled_list=[True], layer_types=["attention"],
            mlp_bias=False, layer_norm_epsilon=1e-5, max_position_embeddings=32,
            rope_theta=10000.0, partial_rotary_factor=1.0)
T5G = dict(vocabulary_size=VOCAB, sliding_window=4, cross_attention_hidden_size=16, **{
    f"{p}_{k}": v for p in ("encoder", "decoder") for k, v in dict(
        drop(L, "num_heads"), num_attention_heads=2, num_key_value_heads=1, head_dim=8,
        layer_types=["full_attention"]).items()})
Q35 = dict(G, num_layers=2, head_dim=8, layer_types=["linear_attention", "full_attention"],
           linear_num_key_heads=2, linear_num_value_heads=2, linear_key_head_dim=4,
           linear_value_head_dim=4, linear_conv_kernel_dim=2)
MOE = dict(moe_intermediate_dim=16, num_experts=2, top_k=2)
SAM3 = dict(image_shape=(28, 28, 3), patch_size=14)
BLIP2 = "src.models.blip2.blip2_"
#: the tiny configuration of every class: keyword arguments of its constructor
TINY: dict[str, dict[str, Any]] = {
    **dict.fromkeys(["BartBackbone", "BertBackbone", "DistilBertBackbone", "ESM2Backbone",
                     "ESMBackbone", "GPT2Backbone", "GPTNeoXBackbone", "OPTBackbone",
                     "RobertaBackbone", "XLMRobertaBackbone"], TD),
    **dict.fromkeys(["Llama3Backbone", "LlamaBackbone", "Phi3Backbone", "Qwen2Backbone",
                     "QwenBackbone"], G),
    **dict.fromkeys(["CLIPVisionEncoder", "DeiTBackbone", "MetaCLIP2VisionEncoder",
                     "SigLIPVisionEncoder"], VIS),
    **dict.fromkeys(["CLIPTextEncoder", "MetaCLIP2TextEncoder", "SigLIPTextEncoder"], TXT),
    **dict.fromkeys(["SmolLM3Backbone", "SmolLMBackbone"], SMOL),
    "BloomBackbone": T, "XLNetBackbone": T, "MiTBackbone": MIT,
    "AlbertBackbone": dict(TD, embedding_dim=8), "DebertaV3Backbone": dict(TD, bucket_size=4),
    "ElectraBackbone": drop(TD, "vocabulary_size", vocab_size=VOCAB, embedding_dim=8),
    "FNetBackbone": drop(TD, "num_heads"), "FalconBackbone": drop(T, "num_heads", num_attention_heads=2),
    "RoformerV2Backbone": dict(T, head_size=8, dropout=0.0), "T5Backbone": dict(T, dropout=0.0),
    "EdRecBackbone": dict(drop(L, "num_layers"), vocab_size=VOCAB, num_layers_enc=1,
                          num_layers_dec=1),
    "GemmaBackbone": dict(G, head_dim=8), "Qwen3Backbone": dict(G, head_dim=8),
    "Gemma3Backbone": dict(G, image_size=16, head_dim=8),
    "Gemma4Backbone": dict(G, image_size=16, head_dim=8),
    "MistralBackbone": dict(G, sliding_window=4), "QwenMoeBackbone": dict(
        G, **MOE, shared_expert_intermediate_dim=16), "Qwen3MoeBackbone": dict(G, **MOE, head_dim=8),
    **dict.fromkeys(["GptOssBackbone", "MixtralBackbone"], dict(G, num_experts=2, top_k=2,
                                                                sliding_window=4)),
    "Qwen3_5Backbone": Q35,
    "Qwen3_5MoeBackbone": drop(Q35, "intermediate_dim", **MOE, shared_expert_intermediate_size=16),
    "Gemma3nBackbone": dict(
        text_vocab_size=VOCAB, text_hidden_size=16, num_hidden_layers=1, pad_token_id=0,
        num_attention_heads=2, num_key_value_heads=1, head_dim=8, intermediate_size=[32],
        hidden_activation="gelu_approximate", layer_types=["full_attention"], sliding_window=4,
        rope_theta=10000.0, max_position_embeddings=SEQ, vocab_size_per_layer_input=VOCAB,
        hidden_size_per_layer_input=2, altup_num_inputs=2, laurel_rank=1),
    "RWKV7Backbone": dict(drop(T, "num_heads", "hidden_dim"), hidden_size=16, head_size=8,
                          gate_lora=8, mv_lora=8, aaa_lora=8, decay_lora=8),
    "T5GemmaBackbone": T5G, "T5Gemma2Backbone": dict(T5G, eoi_token_index=VOCAB - 1),
    "MoonshineBackbone": dict(drop(T, "num_layers", "num_heads"), filter_dim=16,
                              encoder_num_layers=1, decoder_num_layers=1, encoder_num_heads=2,
                              decoder_num_heads=2),
    "WhisperBackbone": dict(T, num_mels=8, max_encoder_sequence_length=32,
                            max_decoder_sequence_length=SEQ),
    "CLIPBackbone": dict(vision_encoder=Sub("models.CLIPVisionEncoder", **VIS),
                         text_encoder=Sub("models.CLIPTextEncoder", **TXT), projection_dim=8),
    "MetaCLIP2Backbone": dict(vision_encoder=Sub("models.MetaCLIP2VisionEncoder", **VIS),
                              text_encoder=Sub("models.MetaCLIP2TextEncoder", **TXT),
                              projection_dim=8),
    "SigLIPBackbone": dict(vision_encoder=Sub("models.SigLIPVisionEncoder", **VIS),
                           text_encoder=Sub("models.SigLIPTextEncoder", **TXT)),
    "BLIP2Backbone": dict(
        vision_encoder=Sub(BLIP2 + "vision_encoder.BLIP2VisionEncoder", **drop(VIS, "image_shape"),
                           image_size=IMG, dropout_rate=0.0, use_patch_bias=True,
                           use_class_token=True, use_mha_bias=True, use_mlp_bias=True,
                           layer_norm_epsilon=1e-6, initializer_range=0.02),
        qformer=Sub(BLIP2 + "qformer.BLIP2QFormer", **L, dropout=0.0, num_query_tokens=2,
                    vision_dim=16, cross_attention_frequency=1, layer_norm_epsilon=1e-6),
        language_model=Sub(BLIP2 + "custom_opt.BLIP2CustomOPT", **dict(TD, max_sequence_length=16),
                           num_query_tokens=2, qformer_hidden_dim=16, language_projection=None)),
    "PaliGemmaBackbone": dict(G, image_size=16, head_dim=8, vit_patch_size=8, vit_num_heads=2,
                              vit_hidden_dim=16, vit_num_layers=1, vit_intermediate_dim=32),
    "PARSeqBackbone": dict(
        image_encoder=Sub("models.ViTBackbone", **drop(VIS, "intermediate_dim"), mlp_dim=32,
                          use_class_token=False), vocabulary_size=VOCAB, max_label_length=SEQ - 1,
        decoder_hidden_dim=16, num_decoder_layers=1, num_decoder_heads=2, decoder_mlp_dim=32,
        dropout_rate=0.0, attention_dropout=0.0),
    "DINOV2Backbone": dict(VIS, position_embedding_shape=I3),
    "DINOV3Backbone": dict(VIS, num_register_tokens=1),
    "ViTBackbone": drop(VIS, "intermediate_dim", mlp_dim=32),
    "ViTDetBackbone": dict(drop(VIS, "hidden_dim"), hidden_size=16, num_output_channels=8,
                           global_attention_layer_indices=[0], window_size=2),
    "VideoPrismBackbone": dict(drop(VIS, "num_layers"), num_frames=2, num_spatial_layers=1,
                               num_temporal_layers=1, num_auxiliary_layers=0),
    "SwinTransformerBackbone": dict(image_shape=I3, embed_dim=16, depths=(1, 1), num_heads=(2, 2),
                                    window_size=4, drop_path=0.0),
    "SegFormerBackbone": dict(image_encoder=Sub("models.MiTBackbone", **MIT), projection_filters=8),
    "DepthAnythingBackbone": dict(
        image_encoder=Sub("models.DINOV2Backbone", **dict(VIS, num_layers=4, image_shape=(
            64, 64, 3)), position_embedding_shape=(64, 64, 3), apply_layernorm=True),
        reassemble_factors=[4, 2, 1, 0.5], neck_hidden_dims=[8, 8, 8, 8], fusion_hidden_dim=8,
        head_hidden_dim=8, head_in_index=-1, feature_keys=["stage1", "stage2", "stage3", "stage4"]),
    "SAMBackbone": dict(
        image_encoder=Sub("models.ViTDetBackbone", **drop(VIS, "hidden_dim", "patch_size"),
                          hidden_size=16, global_attention_layer_indices=[0], patch_size=4,
                          num_output_channels=8, window_size=2),
        prompt_encoder=Sub("layers.SAMPromptEncoder", hidden_size=8, image_embedding_size=(8, 8),
                           input_image_size=(IMG, IMG), mask_in_channels=16),
        mask_decoder=Sub("layers.SAMMaskDecoder", **drop(L, "hidden_dim"), hidden_size=16,
                         embedding_dim=8, num_multimask_outputs=3, iou_head_depth=2,
                         iou_head_hidden_dim=8)),
    "SAM3PromptableConceptBackbone": dict(
        vision_encoder=Sub("layers.SAM3VisionEncoder", **L, **SAM3, fpn_hidden_dim=16,
                           fpn_scale_factors=[4.0, 2.0, 1.0, 0.5], pretrain_image_shape=(28, 28, 3),
                           window_size=2, global_attn_indexes=[0]),
        text_encoder=Sub("layers.SAM3TextEncoder", **drop(TXT, "max_sequence_length")),
        geometry_encoder=Sub("layers.SAM3GeometryEncoder", **L, roi_size=7),
        detr_encoder=Sub("layers.SAM3DetrEncoder", **L),
        detr_decoder=Sub("layers.SAM3DetrDecoder", **L, **SAM3, num_queries=4),
        mask_decoder=Sub("layers.SAM3MaskDecoder", num_upsampling_stages=3, hidden_dim=16,
                         num_heads=2)),
    "FluxBackbone": dict(input_channels=16, hidden_size=32, mlp_ratio=2.0, num_heads=2, depth=1,
                         depth_single_blocks=1, axes_dim=[4, 6, 6], theta=10000, use_bias=True,
                         image_shape=(16, 16), text_shape=(SEQ, 16), image_ids_shape=(16, 3),
                         text_ids_shape=(SEQ, 3), y_shape=(16,)),
    "StableDiffusion3Backbone": dict(
        mmdit_patch_size=2, mmdit_hidden_dim=16, mmdit_num_layers=1, mmdit_num_heads=2,
        mmdit_position_size=16, mmdit_qk_norm=None, mmdit_dual_attention_indices=None,
        vae=Sub("src.models.vae.vae_backbone.VAEBackbone", encoder_num_filters=[32, 32],
                encoder_num_blocks=[1, 1], decoder_num_filters=[32, 32], decoder_num_blocks=[1, 1],
                sampler_method="mode"),
        clip_l=Sub("models.CLIPTextEncoder", **TXT, intermediate_output_index=0),
        clip_g=Sub("models.CLIPTextEncoder", **TXT, intermediate_output_index=0), image_shape=I3),
    "VGGBackbone": dict(stackwise_num_repeats=[1, 1], stackwise_num_filters=[8, 16], image_shape=I3),
    "ResNetBackbone": dict(RESNET.kwargs, stackwise_num_filters=[64, 16], stackwise_num_blocks=[1, 1],
                           stackwise_num_strides=[1, 2]),
    "BASNetBackbone": dict(image_encoder=RESNET, num_classes=1, image_shape=I3),
    "RetinaNetBackbone": dict(image_encoder=RESNET, min_level=3, max_level=5, use_p5=True,
                              image_shape=I3),
    "DeepLabV3Backbone": dict(image_encoder=RESNET, spatial_pyramid_pooling_key="P4",
                              low_level_feature_key="P2", upsampling_size=4, dilation_rates=[2],
                              projection_filters=8, image_shape=I3),
    "DenseNetBackbone": dict(stackwise_num_repeats=[1, 1], growth_rate=4, image_shape=I3),
    "XceptionBackbone": dict(stackwise_conv_filters=[[8, 8], [16, 16]],
                             stackwise_pooling=[False, True], image_shape=I3),
    "CSPNetBackbone": dict(stem_filters=8, stem_kernel_size=3, stem_strides=1, stem_padding="same",
                           stackwise_depth=[1, 1], stackwise_strides=2, stackwise_num_filters=[8, 16],
                           block_type="dark_block", stage_type="csp", bottle_ratio=(0.5, 1.0),
                           block_ratio=(1.0, 0.5), expand_ratio=(2.0, 1.0)),
    "HGNetV2Backbone": dict(HGNET, image_shape=I3),
    "DFineBackbone": dict(
        backbone=Sub("models.HGNetV2Backbone", **dict(HGNET, use_learnable_affine_block=True),
                     out_features=["stage1", "stage2"]), out_features=["stage1", "stage2"],
        decoder_in_channels=[16, 16], encoder_hidden_dim=16, num_denoising=0, num_labels=3,
        hidden_dim=16, learn_initial_query=False, num_queries=4, anchor_image_size=(IMG, IMG),
        feat_strides=[4, 8], num_feature_levels=2, encoder_in_channels=[16, 32],
        encode_proj_layers=[1], num_attention_heads=2, encoder_ffn_dim=32, num_encoder_layers=1,
        hidden_expansion=0.5, depth_multiplier=0.5, eval_idx=-1, num_decoder_layers=1,
        decoder_attention_heads=2, decoder_ffn_dim=32, decoder_n_points=[2, 2], lqe_hidden_dim=8,
        num_lqe_layers=1, seed=0),
    "EfficientNetBackbone": dict(
        {f"stackwise_{k}": v for k, v in dict(
            kernel_sizes=[3, 3], num_repeats=[1, 1], input_filters=[8, 8], output_filters=[8, 16],
            expansion_ratios=[1, 2], squeeze_and_excite_ratios=[0.0, 0.25], strides=[1, 2],
            block_types=["fused", "unfused"], force_input_filters=[0, 0],
            nores_option=[False, False]).items()},
        width_coefficient=1.0, depth_coefficient=1.0, num_features=32),
    "MobileNetBackbone": dict(
        {f"stackwise_{k}": v for k, v in dict(
            expansion=[[16], [32]], num_blocks=[1, 1], num_filters=[[8], [16]],
            kernel_size=[[3], [3]], num_strides=[[2], [2]], se_ratio=[[None], [0.25]],
            activation=[["relu"], ["hard_swish"]], padding=[[1], [1]]).items()},
        output_num_filters=32, depthwise_filters=8, depthwise_stride=2, depthwise_residual=False,
        last_layer_filter=32, squeeze_and_excite=0.5, input_num_filters=8, image_shape=I3),
    "MobileNetV5Backbone": dict(
        {f"stackwise_{k}": v for k, v in dict(
            block_types=[["er"], ["uir"]], num_blocks=[1, 1], num_filters=[[8], [16]],
            strides=[[2], [2]], act_layers=[["relu"], ["relu"]], exp_ratios=[[2.0], [2.0]],
            se_ratios=[[0.0], [0.0]], dw_kernel_sizes=[[0], [3]], exp_kernel_sizes=[[3], [0]],
            pw_kernel_sizes=[[1], [0]], use_cpe=[[False], [False]]).items()},
        **{f"stackwise_{k}": [[0], [0]] for k in (
            "dw_start_kernel_sizes", "dw_end_kernel_sizes", "num_heads", "key_dims",
            "value_dims", "kv_strides")},
        stem_size=8, num_features=32, use_msfa=False, image_shape=I3),
}
#: classes without a configuration of their own, and why
NOT_CONFIGURABLE = {"FeaturePyramidBackbone": "abstract base class (no layers of its own; "
                    "ResNet, CSPNet, HGNetV2, ... subclass it and have rows of their own)"}
#: input sizes (without the batch axis) where the default (8 tokens, 32 px) does not fit
SHAPES: dict[str, dict[str, tuple]] = {
    "WhisperBackbone": {"encoder_features": (32, 8)},
    "MoonshineBackbone": {"encoder_input_values": (2048, 1), "encoder_padding_mask": (2048,)},
    "SAMBackbone": {"points": (1, 2), "labels": (1,), "boxes": (1, 2, 2), "masks": (0, IMG, IMG, 1)},
    "SAM3PromptableConceptBackbone": {"boxes": (1, 5), "box_labels": (1,)},
}
#: the backbone outputs the head reads (default: the first of PREFERRED there, else the last)
OUTPUT = {"DFineBackbone": ("last_hidden_state",),
          "SAMBackbone": ("image_embeddings", "prompt_sparse_embeddings", "prompt_dense_embeddings")}
PREFERRED = ("sequence_output", "decoder_sequence_output")
#: dual encoders: the layer whose inputs are the per-sample embeddings (its output is batch x batch)
DUAL = {"CLIPBackbone": "clip_head", "MetaCLIP2Backbone": "metaclip_2_head",
        "SigLIPBackbone": "siglip_head"}


def log(message: str) -> None:
    print(f"[{datetime.datetime.now():%H:%M:%S}] {message}", flush=True)


def backbone_classes() -> dict[str, type]:
    """Every Backbone subclass exported by `keras_hub.models`, by name."""
    import keras_hub

    base = keras_hub.models.Backbone
    return {n: c for n in sorted(dir(keras_hub.models))
            if inspect.isclass(c := getattr(keras_hub.models, n)) and issubclass(c, base)
            and c is not base}


def failure(exc: BaseException, **row: Any) -> dict:
    """`row` with the exception's first line (`reason`) and `detail`: the items a tf_lrp refusal
    lists (`  - layer: why`), or the message inside a Keras "Exception encountered" wrapper."""
    raw = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", str(exc)).splitlines()
    lines = [ln for ln in (re.sub(r"\x1b\[[0-9;]*m", "", r).strip() for r in raw) if ln] or [""]
    items = [r.strip()[2:] for r in raw if r.startswith("  - ")]
    inner = lines[1:2] if lines[0].startswith("Exception encountered") else []
    return dict(row, reason=f"{type(exc).__name__}: {lines[0]}"[:400], detail=items or inner)


def make_inputs(name: str, backbone) -> Any:
    """A seeded batch in the backbone's input structure (see the module docstring)."""
    rng, kw = np.random.default_rng(0), TINY[name]
    vocab = next((kw[k] for k in ("vocabulary_size", "vocab_size", "text_vocab_size") if k in kw),
                 VOCAB)
    spec = backbone.input
    listed = spec if isinstance(spec, list) else [spec]
    out = {}
    for key, t in spec.items() if isinstance(spec, dict) else [(t.name, t) for t in listed]:
        shape = (BATCH, *(SHAPES.get(name, {}).get(key) or tuple(
            (IMG if len(t.shape) >= 4 else SEQ) if d is None else d for d in t.shape[1:])))
        if "float" in str(t.dtype):
            out[key] = rng.uniform(0.0, 1.0, shape).astype(str(t.dtype))
            continue
        value = rng.integers(1, vocab, shape) if "token_ids" in key else np.full(
            shape, int("padding_mask" in key))
        if ("token_ids" in key or "padding_mask" in key) and len(shape) == 2:
            value[1, -PAD:] = 0
        out[key] = value.astype(str(t.dtype))
    if isinstance(spec, dict):
        return out
    return [out[t.name] for t in listed] if isinstance(spec, list) else out[spec.name]


def kind(model, xs: list) -> str:
    """text / image / video / sequence (float sequences: audio, latents), joined by +."""
    found = {"text"} if any("token_ids" in t.name for t in model.inputs) else set()
    return "+".join(sorted(found | {{3: "sequence", 4: "image", 5: "video"}.get(v.ndim, "tensor")
                                    for v in xs if v.dtype.kind == "f" and v.ndim > 2 and v.size}))


def with_head(name: str, backbone):
    """`keras.Model(backbone inputs, Dense(3)(backbone output averaged over its positions))`."""
    import keras

    pools = {3: keras.layers.GlobalAveragePooling1D, 4: keras.layers.GlobalAveragePooling2D,
             5: keras.layers.GlobalAveragePooling3D}
    if name in DUAL:  # the embeddings of both towers
        out = list(backbone.get_layer(DUAL[name]).input)
    else:
        out = backbone(backbone.input)
        if isinstance(out, dict):
            keys = OUTPUT.get(name) or [next((k for k in PREFERRED if k in out), list(out)[-1])]
            out = [out[k] for k in keys]
        out = out[-1:] if isinstance(out, tuple) else out if isinstance(out, list) else [out]
    out = [o if len(o.shape) == 2 else pools[len(o.shape)]()(o) for o in out]
    feats = keras.layers.Concatenate()(out) if len(out) > 1 else out[0]
    return keras.Model(backbone.input, keras.layers.Dense(3, name="head")(feats), name=name)


def gradient_fn(model, xs: list) -> Callable[[Any], Any]:
    """Traced gradient of the selected logits to the float inputs and embedding matrices."""
    import keras
    import tensorflow as tf

    tensors = [tf.constant(v) for v in xs]
    sources = [t for t in tensors if t.dtype.is_floating] + [
        w.value for layer in model._flatten_layers() if isinstance(layer, keras.layers.Embedding)
        for w in layer.trainable_weights]

    @tf.function
    def grad(targets):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(sources)
            y = model(keras.tree.pack_sequence_as(model._inputs_struct, tensors), training=False)
            logit = tf.reduce_sum(tf.gather(y, targets, axis=1, batch_dims=1))
        return tape.gradient(logit, sources)

    return grad


def ratio(R: Any, logit: np.ndarray) -> list[float]:
    """sum(R)/logit per sample, R summed over every model input."""
    return (sum(np.asarray(r, "float64").reshape(BATCH, -1).sum(1) for r in as_list(R))
            / logit).tolist()


def as_list(x: Any) -> list:
    return list(x) if isinstance(x, list) else [x]


def measure(name: str) -> dict:
    """Build, wrap, explain and time one backbone class; its result row."""
    import keras
    import tensorflow as tf

    import tf_lrp

    cls = backbone_classes()[name]
    row: dict[str, Any] = {"class": name, "outcome": "not built",
                           "family": cls.__module__.split("keras_hub.src.models.")[-1].split(".")[0]}
    if name not in TINY:
        return dict(row, outcome="not configured", reason=NOT_CONFIGURABLE.get(name, "no TINY"))
    keras.utils.set_random_seed(0)
    try:  # keras_hub's part: the tiny backbone, the head, a forward pass
        t0 = time.perf_counter()
        backbone = cls(**built(TINY[name]))
        row["backbone_s"] = time.perf_counter() - t0
        if row["backbone_s"] > BUILD_LIMIT:
            return dict(row, outcome="skipped",
                        reason=f"tiny build took {row['backbone_s']:.0f} s > {BUILD_LIMIT:.0f} s")
        model = with_head(name, backbone)
        x = make_inputs(name, backbone)
        xs = keras.tree.flatten(x)
        row.update(kind=kind(model, xs), params=int(model.count_params()),
                   inputs={t.name: list(v.shape) for t, v in zip(model.inputs, xs)})
        logits = np.asarray(model.predict(x, verbose=0))
    except Exception as exc:
        traceback.print_exc()
        return failure(exc, **row)
    cnn = row["family"] in CNN_FAMILIES
    row["composite"] = "EpsilonPlus" if cnn else "AttnLRP(epsilon=0)"
    arg = xs if len(xs) > 1 else xs[0]
    try:
        row["stage"], t0 = "Analyzer", time.perf_counter()
        a = tf_lrp.Analyzer(model, "epsilon_plus" if cnn else tf_lrp.composites.AttnLRP(0.0))
        row["deferred"] = a.__dict__.get("_deferred") is not None
        row["nodes"] = len(a.for_shape([v.shape[1:] for v in xs]).rule_table())
        row["build_s"], row["stage"] = time.perf_counter() - t0, "predict"
        pred = np.asarray(a.predict(arg))
        row["logits_max_diff"] = float(np.max(np.abs(pred - logits)))
        targets = np.argmax(pred, axis=1).astype("int32")
        row["stage"], t0 = "explain", time.perf_counter()
        R = a(arg, target=targets)
        row["first_call_s"] = time.perf_counter() - t0
        logit = pred[np.arange(BATCH), targets].astype("float64")
        row["ratio"] = ratio(R, logit)
        row["nan"] = bool(any(not np.all(np.isfinite(r)) for r in as_list(R)))
    except Exception as exc:
        traceback.print_exc()
        return failure(exc, **dict(row, outcome="refused"))
    row.update(outcome="explained", stage=None, logits=logit.tolist())
    try:
        cp = tf_lrp.Analyzer(model, tf_lrp.composites.CPLRP(0.0))
        row["ratio_cp"] = ratio(cp(arg, target=targets), logit)
    except Exception as exc:
        row["cp_error"] = "CP-LRP check: " + failure(exc)["reason"]
    try:
        grad, tt = gradient_fn(model, xs), tf.constant(targets)
        grad(tt)
        row["gradient_s"] = statistics.median(timeit.repeat(lambda: grad(tt), number=1, repeat=3))
        row["explain_s"] = statistics.median(timeit.repeat(lambda: a(arg, target=targets),
                                                           number=1, repeat=3))
        row["time_ratio"] = row["explain_s"] / row["gradient_s"]
    except Exception as exc:
        traceback.print_exc()
        row["timing_error"] = failure(exc)["reason"]
    return row


def run_child(name: str, args: argparse.Namespace) -> dict:
    """Measure one class in a fresh Python process; its result row."""
    path = args.results / f"{name}.json"
    path.unlink(missing_ok=True)
    t0 = time.perf_counter()
    try:
        code: Any = subprocess.run([sys.executable, __file__, "--worker", name, "--results",
                                    str(args.results)], timeout=args.timeout).returncode
    except subprocess.TimeoutExpired:
        code = f"time-out after {args.timeout:.0f} s"
    if not path.exists():
        family = backbone_classes()[name].__module__.split("models.")[-1].split(".")[0]
        path.write_text(json.dumps({"class": name, "family": family, "outcome": "crashed",
                                    "reason": f"child process failed ({code}) after "
                                    f"{time.perf_counter() - t0:.0f} s"}))
    return json.loads(path.read_text())


def worker(name: str, args: argparse.Namespace) -> int:
    try:
        row = measure(name)
    except Exception as exc:  # anything measure() did not catch
        traceback.print_exc()
        row = failure(exc, **{"class": name, "outcome": "crashed"})
    from zoo import git_commit  # scripts/ is on the path of a script run from it

    row.update(date=f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
               commit=git_commit())
    tmp = args.results / f"{name}.json.tmp"
    tmp.write_text(json.dumps(row, indent=1))
    os.replace(tmp, args.results / f"{name}.json")
    log(f"[{name}] {row['outcome']}: {row.get('reason', '')}")
    return 0


def _f(values: Any, fmt: str = ".2f") -> str:
    """A number, or per-sample numbers as "mean (first, second)"."""
    if values is None:
        return "-"
    if not isinstance(values, list):
        return format(values, fmt)
    return f"{np.mean(values):{fmt}} ({', '.join(format(v, fmt) for v in values)})"


def cause(row: dict) -> str:
    """A refusal's cause: its first item's reason (with the class for unknown layer types) or
    the inner message, else its first line."""
    text = next(iter(row.get("detail") or []), "") or row.get("reason", "")
    if m := re.match(r"^(\S+) \(\d+ layers?: .*?\): (.*)$", text):
        text = f"{m[2]}: {m[1].split('.')[-1]}" if "layer type" in m[2] else m[2]
    return text[:160]


def report(rows: Sequence[dict], argv: Sequence[str]) -> str:
    """The markdown report: how it was made, counts, one row per class, refusals by cause."""
    import keras
    import keras_hub
    import tensorflow as tf

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from benchmark import cpu_name
    from zoo import git_commit

    counts = {k: sum(r["outcome"] == k for r in rows) for k in sorted({r["outcome"] for r in rows})}
    dates = sorted(r["date"] for r in rows if "date" in r) or ["?"]
    lines = [
        "# KerasHub backbones", "",
        f"`{' '.join(['python scripts/hub.py', *argv])}`; tf_lrp at "
        f"{', '.join(sorted({r.get('commit', git_commit()) for r in rows}))}; measured "
        f"{dates[0]} to {dates[-1]} on {cpu_name()}, {os.cpu_count()} cores (CPU only, shared: "
        f"times are indicative); Python {platform.python_version()}, TensorFlow {tf.__version__}, "
        f"Keras {keras.__version__}, keras-hub {keras_hub.__version__}.", "",
        (__doc__ or "").split("\n\n")[2].replace("\n", " "), "",
        f"**{counts.get('explained', 0)} explained of {len(rows)}** backbone classes ("
        + ", ".join(f"{k}: {n}" for k, n in counts.items()) + ").", "",
        "| class | family / kind | composite | outcome | sum(R)/logit, mean (per sample) "
        "| CP-LRP check | logits max diff | build s | explain / gradient | reason |",
        "|" + "---|" * 10]
    for r in rows:
        reason = (f"{r['stage']}: " if r.get("stage") else "") + r.get(
            "reason", r.get("cp_error", "")) + "".join(
            f" {d[:200]}" for d in (r.get("detail") or [])[:1]) + (
            f" (+{len(r['detail']) - 1} more)" if len(r.get("detail") or []) > 1 else "")
        lines.append(
            f"| {r['class']} | {r.get('family', '?')} / {r.get('kind') or '-'} | "
            f"{r.get('composite', '-')} | {r['outcome']} | {_f(r.get('ratio'))}"
            f"{' **NaN**' if r.get('nan') else ''} | "
            f"{_f(r.get('ratio_cp'))} | {_f(r.get('logits_max_diff'), '.0e')} | "
            f"{_f(r.get('build_s'), '.1f')} | {_f(r.get('time_ratio'), '.1f')} | "
            f"{reason.replace('|', '/')} |")
    groups: dict[str, list[str]] = {}
    for r in rows:
        if r["outcome"] not in ("explained", "not configured"):
            groups.setdefault(cause(r), []).append(r["class"])
    lines += ["", "## Not explained, by cause", ""] + [
        f"- {c.replace('|', '/')} ({len(ns)}): {', '.join(ns)}"
        for c, ns in sorted(groups.items(), key=lambda kv: -len(kv[1]))]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--models", default="all", help="comma-separated class names, or 'all'")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "HUB.md")
    p.add_argument("--results", type=Path, default=Path("/tmp/hub_results"))
    p.add_argument("--resume", action="store_true", help="keep the classes that have a result")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per class")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args.results.mkdir(parents=True, exist_ok=True)
    if args.worker:
        return worker(args.worker, args)
    everything = list(backbone_classes())
    names = everything if args.models == "all" else [s.strip() for s in args.models.split(",")]
    for i, name in enumerate([] if args.report_only else names, 1):
        if not (args.resume and (args.results / f"{name}.json").exists()):
            log(f"== {name} ({i}/{len(names)})")
            run_child(name, args)
    rows = [json.loads(f.read_text()) for n in everything
            if (f := args.results / f"{n}.json").exists()]
    args.out.write_text(report(rows, sys.argv[1:] if argv is None else argv))
    log(f"wrote {args.out} ({len(rows)} classes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
