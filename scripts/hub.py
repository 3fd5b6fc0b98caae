"""Every KerasHub backbone, tiny and randomly initialised, explained by tf_lrp.

    python scripts/hub.py                               # every backbone class, then benchmarks/HUB.md
    python scripts/hub.py --models BertBackbone,ViTBackbone --out /tmp/hub.md
    python scripts/hub.py --report-only                 # only rewrite the report from the results

Every class in ``keras_hub.models`` that subclasses ``keras_hub.models.Backbone`` is built from
the tiny configuration in :data:`TINY` (vocabulary 64, one or two layers, hidden size 8-16, two
heads, images of 32 px or the smallest size the class accepts; no preset, no download, random
weights), in a child process of its own (a crash or a time-out costs one row). The child wraps
the backbone in a small head on the backbone's own input dict (:func:`with_head`: the sequence
or feature map pooled over its positions, then ``Dense(3)``), makes a batch of 2 (token ids
random, the second sample padded over its last 3 of 8 positions; images uniform in [0, 1)) and
runs ``tf_lrp.Analyzer(model, AttnLRP(epsilon=0.0))`` (``"epsilon_plus"`` for the convolutional
families in :data:`CNN_FAMILIES`) on the highest logit of each sample. Recorded: the outcome
(explained, or the exception's first line where tf_lrp refuses), sum(R) / logit (the relevance
of every input summed, per sample), max |analyzer.predict(x) - model.predict(x)|, the graph
build time (``Analyzer`` + ``for_shape``), and the explanation's time over a plain
``tf.GradientTape`` gradient of the same logits (to the float inputs and the token embedding
matrices; both traced, medians of 3 after a warm-up).

Results go to ``<results>/<class>.json``; the parent writes the markdown report (``--out``,
default ``benchmarks/HUB.md``) from every result file there.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import inspect
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SEQ, VOCAB, PAD, IMG, BATCH = 8, 64, 3, 32, 2
BUILD_LIMIT = 60.0  # seconds: a tiny backbone that takes longer to build is skipped
CNN_FAMILIES = {"resnet", "vgg", "densenet", "cspnet", "efficientnet", "mobilenet", "mobilenetv5",
                "xception", "hgnetv2", "basnet", "deeplab_v3", "retinanet"}


class Sub:
    """A sub-model argument (an encoder inside a backbone), built when the backbone is."""

    def __init__(self, path: str, **kwargs: Any) -> None:
        self.path, self.kwargs = path, kwargs

    def build(self) -> Any:
        module, _, name = self.path.rpartition(".")
        cls = getattr(importlib.import_module("keras_hub." + module), name)
        return cls(**{k: v.build() if isinstance(v, Sub) else v for k, v in self.kwargs.items()})


T = dict(vocabulary_size=VOCAB, num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32)
TD = dict(T, dropout=0.0, max_sequence_length=SEQ)
G = dict(vocabulary_size=VOCAB, num_layers=1, num_query_heads=2, num_key_value_heads=1,
         hidden_dim=16, intermediate_dim=32)
TXT_ENC = dict(vocabulary_size=VOCAB, embedding_dim=16, hidden_dim=16, num_layers=1, num_heads=2,
               intermediate_dim=32, max_sequence_length=SEQ)
VIS_ENC = dict(patch_size=8, hidden_dim=16, num_layers=1, num_heads=2, intermediate_dim=32,
               image_shape=(IMG, IMG, 3))
RESNET = dict(input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 8, 16, 16],
              stackwise_num_blocks=[1, 1, 1, 1], stackwise_num_strides=[1, 2, 2, 2],
              block_type="basic_block")
MIT = dict(layerwise_depths=[1, 1], image_shape=(IMG, IMG, 3), hidden_dims=[8, 16], num_layers=2,
           layerwise_num_heads=[1, 2], layerwise_sr_ratios=[4, 2], max_drop_path_rate=0.0,
           layerwise_patch_sizes=[7, 3], layerwise_strides=[4, 2])
SMOL = dict(vocabulary_size=VOCAB, hidden_dim=16, intermediate_dim=32, num_layers=1,
            num_attention_heads=2, num_key_value_heads=1, attention_bias=False,
            attention_dropout=0.0, rope_layer_enabled_list=[True], layer_types=["attention"],
            mlp_bias=False, layer_norm_epsilon=1e-5, max_position_embeddings=32,
            rope_theta=10000.0, partial_rotary_factor=1.0)
T5G = dict(vocabulary_size=VOCAB, sliding_window=4, cross_attention_hidden_size=16,
           **{f"{p}_{k}": v for p in ("encoder", "decoder") for k, v in dict(
               hidden_dim=16, intermediate_dim=32, num_layers=1, num_attention_heads=2,
               num_key_value_heads=1, head_dim=8, layer_types=["full_attention"]).items()})
Q35 = dict(G, num_layers=2, head_dim=8, layer_types=["linear_attention", "full_attention"],
           linear_num_key_heads=2, linear_num_value_heads=2, linear_key_head_dim=4,
           linear_value_head_dim=4, linear_conv_kernel_dim=2)
VAE = Sub("src.models.vae.vae_backbone.VAEBackbone", encoder_num_filters=[32, 32],
          encoder_num_blocks=[1, 1], decoder_num_filters=[32, 32], decoder_num_blocks=[1, 1],
          sampler_method="mode")
CLIP_TXT = dict(vocabulary_size=VOCAB, embedding_dim=16, hidden_dim=16, num_layers=1, num_heads=2,
                intermediate_dim=32, intermediate_activation="quick_gelu",
                intermediate_output_index=0)
#: the tiny configuration of every class (keyword arguments of its constructor)
TINY: dict[str, dict[str, Any]] = {
    "AlbertBackbone": dict(TD, embedding_dim=8),
    "BASNetBackbone": dict(image_encoder=Sub("models.ResNetBackbone", **RESNET), num_classes=1,
                           image_shape=(IMG, IMG, 3)),
    "BLIP2Backbone": dict(
        vision_encoder=Sub("src.models.blip2.blip2_vision_encoder.BLIP2VisionEncoder",
                           image_size=IMG, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16,
                           intermediate_dim=32, dropout_rate=0.0, use_patch_bias=True,
                           use_class_token=True, use_mha_bias=True, use_mlp_bias=True,
                           layer_norm_epsilon=1e-6, initializer_range=0.02),
        qformer=Sub("src.models.blip2.blip2_qformer.BLIP2QFormer", num_query_tokens=2,
                    num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32,
                    vision_dim=16, cross_attention_frequency=1, dropout=0.0,
                    layer_norm_epsilon=1e-6),
        language_model=Sub("src.models.blip2.blip2_custom_opt.BLIP2CustomOPT", **dict(
            TD, num_query_tokens=2, qformer_hidden_dim=16, max_sequence_length=16,
            language_projection=None))),
    "BartBackbone": TD, "BertBackbone": TD, "BloomBackbone": T,
    "CLIPBackbone": dict(vision_encoder=Sub("models.CLIPVisionEncoder", **VIS_ENC),
                         text_encoder=Sub("models.CLIPTextEncoder", **TXT_ENC), projection_dim=8),
    "CLIPTextEncoder": TXT_ENC, "CLIPVisionEncoder": VIS_ENC,
    "CSPNetBackbone": dict(stem_filters=8, stem_kernel_size=3, stem_strides=1, stackwise_depth=[1, 1],
                           stackwise_strides=2, stackwise_num_filters=[8, 16],
                           block_type="dark_block", stage_type="csp", stem_padding="same",
                           bottle_ratio=(0.5, 1.0), block_ratio=(1.0, 0.5), expand_ratio=(2.0, 1.0)),
    "DFineBackbone": dict(
        backbone=Sub("models.HGNetV2Backbone", stem_channels=[3, 8, 8], embedding_size=8,
                     stackwise_stage_filters=[[8, 8, 16, 1, 1, 3], [16, 8, 32, 1, 1, 3]],
                     apply_downsample=[False, True], use_lightweight_conv_block=[False, False],
                     depths=[1, 1], hidden_sizes=[16, 32], use_learnable_affine_block=True,
                     hidden_act="relu", out_features=["stage1", "stage2"]),
        decoder_in_channels=[16, 16], encoder_hidden_dim=16, num_denoising=0, num_labels=3,
        hidden_dim=16, learn_initial_query=False, num_queries=4, anchor_image_size=(IMG, IMG),
        feat_strides=[4, 8], num_feature_levels=2, encoder_in_channels=[16, 32],
        encode_proj_layers=[1], num_attention_heads=2, encoder_ffn_dim=32, num_encoder_layers=1,
        hidden_expansion=0.5, depth_multiplier=0.5, eval_idx=-1, num_decoder_layers=1,
        decoder_attention_heads=2, decoder_ffn_dim=32, decoder_n_points=[2, 2], lqe_hidden_dim=8,
        num_lqe_layers=1, out_features=["stage1", "stage2"], seed=0),
    "DINOV2Backbone": dict(VIS_ENC, position_embedding_shape=(IMG, IMG, 3)),
    "DINOV3Backbone": dict(VIS_ENC, num_register_tokens=1),
    "DebertaV3Backbone": dict(TD, bucket_size=4),
    "DeepLabV3Backbone": dict(image_encoder=Sub("models.ResNetBackbone", **RESNET),
                              spatial_pyramid_pooling_key="P4", low_level_feature_key="P2",
                              upsampling_size=4, dilation_rates=[2], projection_filters=8,
                              image_shape=(IMG, IMG, 3)),
    "DeiTBackbone": dict(VIS_ENC),
    "DenseNetBackbone": dict(stackwise_num_repeats=[1, 1], growth_rate=4, image_shape=(IMG, IMG, 3)),
    "DepthAnythingBackbone": dict(
        image_encoder=Sub("models.DINOV2Backbone", patch_size=8, num_layers=4, hidden_dim=16,
                          num_heads=2, intermediate_dim=32, image_shape=(64, 64, 3),
                          position_embedding_shape=(64, 64, 3), apply_layernorm=True),
        reassemble_factors=[4, 2, 1, 0.5], neck_hidden_dims=[8, 8, 8, 8], fusion_hidden_dim=8,
        head_hidden_dim=8, head_in_index=-1, feature_keys=["stage1", "stage2", "stage3", "stage4"]),
    "DistilBertBackbone": TD,
    "ESM2Backbone": dict(TD), "ESMBackbone": dict(TD),
    "EdRecBackbone": dict(vocab_size=VOCAB, num_layers_enc=1, num_layers_dec=1, hidden_dim=16,
                          intermediate_dim=32, num_heads=2),
    "EfficientNetBackbone": dict(
        stackwise_kernel_sizes=[3, 3], stackwise_num_repeats=[1, 1], stackwise_input_filters=[8, 8],
        stackwise_output_filters=[8, 16], stackwise_expansion_ratios=[1, 2],
        stackwise_squeeze_and_excite_ratios=[0.0, 0.25], stackwise_strides=[1, 2],
        stackwise_block_types=["fused", "unfused"], stackwise_force_input_filters=[0, 0],
        stackwise_nores_option=[False, False], width_coefficient=1.0, depth_coefficient=1.0,
        num_features=32),
    "ElectraBackbone": dict({k: v for k, v in TD.items() if k != "vocabulary_size"},
                            vocab_size=VOCAB, embedding_dim=8),
    "FNetBackbone": {k: v for k, v in TD.items() if k != "num_heads"},
    "FalconBackbone": dict({k: v for k, v in T.items() if k != "num_heads"}, num_attention_heads=2),
    "FluxBackbone": dict(input_channels=16, hidden_size=32, mlp_ratio=2.0, num_heads=2, depth=1,
                         depth_single_blocks=1, axes_dim=[4, 6, 6], theta=10000, use_bias=True,
                         image_shape=(16, 16), text_shape=(SEQ, 16), image_ids_shape=(16, 3),
                         text_ids_shape=(SEQ, 3), y_shape=(16,)),
    "GPT2Backbone": TD, "GPTNeoXBackbone": TD,
    "Gemma3Backbone": dict(G, image_size=16, head_dim=8),
    "Gemma4Backbone": dict(G, image_size=16, head_dim=8),
    "Gemma3nBackbone": dict(
        text_vocab_size=VOCAB, text_hidden_size=16, num_hidden_layers=1, pad_token_id=0,
        num_attention_heads=2, num_key_value_heads=1, head_dim=8, intermediate_size=[32],
        hidden_activation="gelu_approximate", layer_types=["full_attention"], sliding_window=4,
        rope_theta=10000.0, max_position_embeddings=SEQ, vocab_size_per_layer_input=VOCAB,
        hidden_size_per_layer_input=2, altup_num_inputs=2, laurel_rank=1),
    "GemmaBackbone": dict(G, head_dim=8),
    "GptOssBackbone": dict(G, num_experts=2, top_k=2, sliding_window=4),
    "HGNetV2Backbone": dict(stem_channels=[3, 8, 8], embedding_size=8,
                            stackwise_stage_filters=[[8, 8, 16, 1, 1, 3], [16, 8, 32, 1, 1, 3]],
                            apply_downsample=[False, True], use_lightweight_conv_block=[False, False],
                            depths=[1, 1], hidden_sizes=[16, 32], use_learnable_affine_block=False,
                            hidden_act="relu", image_shape=(IMG, IMG, 3)),
    "Llama3Backbone": G, "LlamaBackbone": G,
    "MetaCLIP2Backbone": dict(vision_encoder=Sub("models.MetaCLIP2VisionEncoder", **VIS_ENC),
                              text_encoder=Sub("models.MetaCLIP2TextEncoder", **TXT_ENC),
                              projection_dim=8),
    "MetaCLIP2TextEncoder": TXT_ENC, "MetaCLIP2VisionEncoder": VIS_ENC,
    "MiTBackbone": MIT,
    "MistralBackbone": dict(G, sliding_window=4),
    "MixtralBackbone": dict(G, num_experts=2, top_k=2, sliding_window=4),
    "MobileNetBackbone": dict(
        stackwise_expansion=[[16], [32]], stackwise_num_blocks=[1, 1],
        stackwise_num_filters=[[8], [16]], stackwise_kernel_size=[[3], [3]],
        stackwise_num_strides=[[2], [2]], stackwise_se_ratio=[[None], [0.25]],
        stackwise_activation=[["relu"], ["hard_swish"]], stackwise_padding=[[1], [1]],
        output_num_filters=32, depthwise_filters=8, depthwise_stride=2, depthwise_residual=False,
        last_layer_filter=32, squeeze_and_excite=0.5, input_num_filters=8,
        image_shape=(IMG, IMG, 3)),
    "MobileNetV5Backbone": dict(
        stackwise_block_types=[["er"], ["uir"]], stackwise_num_blocks=[1, 1],
        stackwise_num_filters=[[8], [16]], stackwise_strides=[[2], [2]],
        stackwise_act_layers=[["relu"], ["relu"]], stackwise_exp_ratios=[[2.0], [2.0]],
        stackwise_se_ratios=[[0.0], [0.0]], stackwise_dw_kernel_sizes=[[0], [3]],
        stackwise_dw_start_kernel_sizes=[[0], [0]], stackwise_dw_end_kernel_sizes=[[0], [0]],
        stackwise_exp_kernel_sizes=[[3], [0]], stackwise_pw_kernel_sizes=[[1], [0]],
        stackwise_num_heads=[[0], [0]], stackwise_key_dims=[[0], [0]],
        stackwise_value_dims=[[0], [0]], stackwise_kv_strides=[[0], [0]],
        stackwise_use_cpe=[[False], [False]], stem_size=8, num_features=32, use_msfa=False,
        image_shape=(IMG, IMG, 3)),
    "MoonshineBackbone": dict(vocabulary_size=VOCAB, filter_dim=16, encoder_num_layers=1,
                              decoder_num_layers=1, hidden_dim=16, intermediate_dim=32,
                              encoder_num_heads=2, decoder_num_heads=2),
    "OPTBackbone": TD,
    "PARSeqBackbone": dict(
        image_encoder=Sub("models.ViTBackbone", image_shape=(IMG, IMG, 3), patch_size=8,
                          num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32,
                          use_class_token=False),
        vocabulary_size=VOCAB, max_label_length=SEQ - 1, decoder_hidden_dim=16,
        num_decoder_layers=1, num_decoder_heads=2, decoder_mlp_dim=32, dropout_rate=0.0,
        attention_dropout=0.0),
    "PaliGemmaBackbone": dict(G, image_size=16, head_dim=8, vit_patch_size=8, vit_num_heads=2,
                              vit_hidden_dim=16, vit_num_layers=1, vit_intermediate_dim=32),
    "Phi3Backbone": dict(G),
    "Qwen2Backbone": G, "QwenBackbone": G,
    "Qwen3Backbone": dict(G, head_dim=8),
    "Qwen3MoeBackbone": dict(G, head_dim=8, moe_intermediate_dim=16, num_experts=2, top_k=2),
    "Qwen3_5Backbone": Q35,
    "Qwen3_5MoeBackbone": dict({k: v for k, v in Q35.items() if k != "intermediate_dim"},
                               moe_intermediate_dim=16, shared_expert_intermediate_size=16,
                               num_experts=2, top_k=2),
    "QwenMoeBackbone": dict(G, moe_intermediate_dim=16, shared_expert_intermediate_dim=16,
                            num_experts=2, top_k=2),
    "RWKV7Backbone": dict(hidden_size=16, head_size=8, num_layers=1, vocabulary_size=VOCAB,
                          intermediate_dim=32, gate_lora=8, mv_lora=8, aaa_lora=8, decay_lora=8),
    "ResNetBackbone": dict(RESNET, stackwise_num_filters=[64, 16], stackwise_num_blocks=[1, 1],
                           stackwise_num_strides=[1, 2]),
    "RetinaNetBackbone": dict(image_encoder=Sub("models.ResNetBackbone", **RESNET), min_level=3,
                              max_level=5, use_p5=True, image_shape=(IMG, IMG, 3)),
    "RobertaBackbone": TD,
    "RoformerV2Backbone": dict(T, head_size=8, dropout=0.0),
    "SAM3PromptableConceptBackbone": dict(
        vision_encoder=Sub("layers.SAM3VisionEncoder", image_shape=(28, 28, 3), patch_size=14,
                           num_layers=1, hidden_dim=16, intermediate_dim=32, num_heads=2,
                           fpn_hidden_dim=16, fpn_scale_factors=[4.0, 2.0, 1.0, 0.5],
                           pretrain_image_shape=(28, 28, 3), window_size=2, global_attn_indexes=[0]),
        text_encoder=Sub("layers.SAM3TextEncoder", **dict(TXT_ENC, max_sequence_length=32)),
        geometry_encoder=Sub("layers.SAM3GeometryEncoder", num_layers=1, hidden_dim=16,
                             intermediate_dim=32, num_heads=2, roi_size=7),
        detr_encoder=Sub("layers.SAM3DetrEncoder", num_layers=1, hidden_dim=16, intermediate_dim=32,
                         num_heads=2),
        detr_decoder=Sub("layers.SAM3DetrDecoder", image_shape=(28, 28, 3), patch_size=14,
                         num_layers=1, hidden_dim=16, intermediate_dim=32, num_heads=2,
                         num_queries=4),
        mask_decoder=Sub("layers.SAM3MaskDecoder", num_upsampling_stages=3, hidden_dim=16,
                         num_heads=2)),
    "SAMBackbone": dict(
        image_encoder=Sub("models.ViTDetBackbone", hidden_size=16, num_layers=2, intermediate_dim=32,
                          num_heads=2, global_attention_layer_indices=[1], patch_size=4,
                          num_output_channels=8, window_size=2, image_shape=(IMG, IMG, 3)),
        prompt_encoder=Sub("layers.SAMPromptEncoder", hidden_size=8, image_embedding_size=(8, 8),
                           input_image_size=(IMG, IMG), mask_in_channels=16),
        mask_decoder=Sub("layers.SAMMaskDecoder", num_layers=1, hidden_size=16, intermediate_dim=32,
                         num_heads=2, embedding_dim=8, num_multimask_outputs=3, iou_head_depth=2,
                         iou_head_hidden_dim=8)),
    "SegFormerBackbone": dict(image_encoder=Sub("models.MiTBackbone", **MIT), projection_filters=8),
    "SigLIPBackbone": dict(vision_encoder=Sub("models.SigLIPVisionEncoder", **VIS_ENC),
                           text_encoder=Sub("models.SigLIPTextEncoder", **TXT_ENC)),
    "SigLIPTextEncoder": TXT_ENC, "SigLIPVisionEncoder": VIS_ENC,
    "SmolLM3Backbone": SMOL, "SmolLMBackbone": SMOL,
    "StableDiffusion3Backbone": dict(
        mmdit_patch_size=2, mmdit_hidden_dim=16, mmdit_num_layers=1, mmdit_num_heads=2,
        mmdit_position_size=16, mmdit_qk_norm=None, mmdit_dual_attention_indices=None, vae=VAE,
        clip_l=Sub("models.CLIPTextEncoder", **CLIP_TXT),
        clip_g=Sub("models.CLIPTextEncoder", **CLIP_TXT), image_shape=(IMG, IMG, 3)),
    "SwinTransformerBackbone": dict(image_shape=(IMG, IMG, 3), embed_dim=16, depths=(1, 1),
                                    num_heads=(2, 2), window_size=4, drop_path=0.0),
    "T5Backbone": dict(T, dropout=0.0),
    "T5Gemma2Backbone": dict(T5G, eoi_token_index=VOCAB - 1), "T5GemmaBackbone": T5G,
    "VGGBackbone": dict(stackwise_num_repeats=[1, 1], stackwise_num_filters=[8, 16],
                        image_shape=(IMG, IMG, 3)),
    "ViTBackbone": dict({k: v for k, v in VIS_ENC.items() if k != "intermediate_dim"}, mlp_dim=32),
    "ViTDetBackbone": dict(hidden_size=16, num_layers=1, intermediate_dim=32, num_heads=2,
                           global_attention_layer_indices=[0], image_shape=(IMG, IMG, 3),
                           patch_size=8, num_output_channels=8, window_size=2),
    "VideoPrismBackbone": dict(num_frames=2, patch_size=8, hidden_dim=16, intermediate_dim=32,
                               num_heads=2, num_spatial_layers=1, num_temporal_layers=1,
                               num_auxiliary_layers=0, image_shape=(IMG, IMG, 3)),
    "WhisperBackbone": dict(T, num_mels=8, max_encoder_sequence_length=32,
                            max_decoder_sequence_length=SEQ),
    "XLMRobertaBackbone": TD, "XLNetBackbone": T,
    "XceptionBackbone": dict(stackwise_conv_filters=[[8, 8], [16, 16]],
                             stackwise_pooling=[False, True], image_shape=(IMG, IMG, 3)),
}
#: classes without a configuration of their own, and why
NOT_CONFIGURABLE = {
    "FeaturePyramidBackbone": "abstract base class (no layers of its own; ResNet, CSPNet, "
                              "HGNetV2, ... subclass it and have rows of their own)",
}
#: input sizes (without the batch axis) where the default (8 tokens, 32 px) does not fit
SHAPES: dict[str, dict[str, tuple]] = {
    "WhisperBackbone": {"encoder_features": (32, 8)},
    "MoonshineBackbone": {"encoder_input_values": (2048, 1), "encoder_padding_mask": (2048,)},
    "SAMBackbone": {"points": (1, 2), "labels": (1,), "boxes": (1, 2, 2), "masks": (0, IMG, IMG, 1)},
    "SAM3PromptableConceptBackbone": {"boxes": (1, 5), "box_labels": (1,)},
}
#: which backbone output the head reads (default: the first of PREFERRED, else the last)
OUTPUT = {"DFineBackbone": ("last_hidden_state",), "SAMBackbone": (
    "image_embeddings", "prompt_sparse_embeddings", "prompt_dense_embeddings")}
PREFERRED = ("sequence_output", "decoder_sequence_output", "image_features")
#: dual encoders: the per-sample embeddings in front of the batch x batch similarity head
DUAL = {"CLIPBackbone": "clip_head", "MetaCLIP2Backbone": "metaclip_2_head",
        "SigLIPBackbone": "siglip_head"}


def log(message: str) -> None:
    print(f"[{datetime.datetime.now():%H:%M:%S}] {message}", flush=True)


def backbone_classes() -> dict[str, type]:
    """Every Backbone subclass exported by ``keras_hub.models``, by name."""
    import keras_hub

    base = keras_hub.models.Backbone
    return {n: c for n in sorted(dir(keras_hub.models))
            if inspect.isclass(c := getattr(keras_hub.models, n)) and issubclass(c, base)
            and c is not base}


def family(cls: type) -> str:
    return cls.__module__.split("keras_hub.src.models.")[-1].split(".")[0]


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def detail(exc: BaseException) -> str:
    """The first item of a tf_lrp refusal that lists items (``  - layer: why``), if any."""
    return next((ln.strip()[2:] for ln in str(exc).splitlines() if ln.startswith("  - ")), "")


def kind(model, xs: list) -> str:
    """text / image / video / sequence (float sequences: audio, latents), joined by +."""
    found = {"text"} if any("token_ids" in t.name for t in model.inputs) else set()
    found |= {{3: "sequence", 4: "image", 5: "video"}.get(v.ndim, "tensor")
              for v in xs if v.dtype.kind == "f" and v.ndim >= 3}
    return "+".join(sorted(found)) or "other"


def make_inputs(name: str, backbone, kwargs: dict) -> Any:
    """A seeded batch of 2 in the backbone's input structure: token ids in 1..vocab-1, the second
    sample padded (mask 0, token 0) over its last PAD positions, images uniform in [0, 1)."""
    rng = np.random.default_rng(0)
    vocab = next((kwargs[k] for k in ("vocabulary_size", "vocab_size", "text_vocab_size")
                  if k in kwargs), VOCAB)
    spec = backbone.input
    items = spec.items() if isinstance(spec, dict) else [
        (t.name, t) for t in (spec if isinstance(spec, list) else [spec])]
    out = {}
    for key, t in items:
        shape = SHAPES.get(name, {}).get(key) or tuple(
            (IMG if len(t.shape) >= 4 else SEQ) if d is None else d for d in t.shape[1:])
        shape = (BATCH, *shape)
        if "float" in str(t.dtype):
            out[key] = rng.uniform(0.0, 1.0, shape).astype(str(t.dtype))
            continue
        value = np.zeros(shape, "int64")
        if "token_ids" in key:
            value = rng.integers(1, vocab, shape)
        if "padding_mask" in key:
            value = np.ones(shape, "int64")
        if ("token_ids" in key or "padding_mask" in key) and len(shape) == 2:
            value[1, -PAD:] = 0
        out[key] = value.astype(str(t.dtype))
    return out if isinstance(spec, dict) else list(out.values()) if isinstance(
        spec, list) else out[spec.name]


def pooled(x):
    """The head's pooling for a tensor of any rank: the mean over every axis but batch/last."""
    import keras

    rank = len(x.shape)
    if rank == 2:
        return x
    pools = {3: keras.layers.GlobalAveragePooling1D, 4: keras.layers.GlobalAveragePooling2D,
             5: keras.layers.GlobalAveragePooling3D}
    if rank not in pools:
        raise ValueError(f"no pooling for an output of rank {rank}")
    return pools[rank]()(x)


def with_head(name: str, backbone):
    """``keras.Model(backbone inputs, Dense(3)(pooled backbone output))``."""
    import keras

    inputs = backbone.input
    if name in DUAL:  # the per-sample embeddings of both towers, concatenated
        feats = keras.layers.Concatenate()(list(backbone.get_layer(DUAL[name]).input))
    else:
        out = backbone(inputs)
        if isinstance(out, dict):
            keys = OUTPUT.get(name) or [next((k for k in PREFERRED if k in out), list(out)[-1])]
            out = [out[k] for k in keys] if len(keys) > 1 else out[keys[0]]
        elif isinstance(out, (list, tuple)):
            out = out[-1]
        feats = keras.layers.Concatenate()([pooled(o) for o in out]) if isinstance(
            out, list) else pooled(out)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(feats), name=f"{name}_head")


def gradient_fn(model, xs: list) -> Callable[[], Any]:
    """A traced plain gradient of each sample's highest logit to the float inputs and the
    token embedding matrices (what the explanation's input relevance corresponds to)."""
    import keras
    import tensorflow as tf

    tensors = [tf.constant(v) for v in xs]
    embeddings = [w.value for layer in model._flatten_layers()
                  if isinstance(layer, keras.layers.Embedding) for w in layer.trainable_weights]
    structure = model._inputs_struct

    @tf.function
    def grad(targets):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            floats = [t for t in tensors if t.dtype.is_floating]
            for v in floats + embeddings:
                tape.watch(v)
            y = model(keras.tree.pack_sequence_as(structure, tensors), training=False)
            logit = tf.reduce_sum(tf.gather(y, targets, axis=1, batch_dims=1))
        return tape.gradient(logit, floats + embeddings)

    return grad


def median_time(fn: Callable[[], Any], rounds: int = 3) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(name: str) -> dict:
    """Build, wrap, explain and time one backbone class; the result row."""
    import keras
    import tensorflow as tf

    import tf_lrp

    cls = backbone_classes()[name]
    fam = family(cls)
    row: dict[str, Any] = {"class": name, "family": fam, "outcome": "not built"}
    if name in NOT_CONFIGURABLE or name not in TINY:
        return dict(row, outcome="not configured",
                    reason=NOT_CONFIGURABLE.get(name, "no tiny configuration in TINY"))
    keras.utils.set_random_seed(0)
    kwargs = TINY[name]
    try:
        t0 = time.perf_counter()
        backbone = cls(**{k: v.build() if isinstance(v, Sub) else v for k, v in kwargs.items()})
        row["backbone_s"] = time.perf_counter() - t0
        if row["backbone_s"] > BUILD_LIMIT:
            return dict(row, outcome="skipped",
                        reason=f"tiny build took {row['backbone_s']:.0f} s > {BUILD_LIMIT:.0f} s")
        model = with_head(name, backbone)
        x = make_inputs(name, backbone, kwargs)
        xs = keras.tree.flatten(x)
        row["inputs"] = {t.name: list(v.shape) for t, v in zip(model.inputs, xs)}
        row["kind"] = kind(model, xs)
        row["params"] = int(model.count_params())
        logits = np.asarray(model.predict(x, verbose=0))
    except Exception as exc:  # keras_hub itself: the tiny model does not build or run
        traceback.print_exc()
        return dict(row, reason=first_line(exc))
    comp = "epsilon_plus" if fam in CNN_FAMILIES else tf_lrp.composites.AttnLRP(epsilon=0.0)
    row["composite"] = "EpsilonPlus" if fam in CNN_FAMILIES else "AttnLRP(epsilon=0)"
    stage = "Analyzer"
    try:
        t0 = time.perf_counter()
        a = tf_lrp.Analyzer(model, comp)
        row["deferred"] = a.__dict__.get("_deferred") is not None
        built = a.for_shape([v.shape[1:] for v in xs])
        row["build_s"] = time.perf_counter() - t0
        row["nodes"] = len(built.rule_table())
        stage = "predict"
        pred = np.asarray(a.predict(xs if len(xs) > 1 else xs[0]))
        row["logits_max_diff"] = float(np.max(np.abs(pred - logits)))
        targets = np.argmax(pred, axis=1).astype("int32")
        stage = "explain"
        arg = xs if len(xs) > 1 else xs[0]
        t0 = time.perf_counter()
        R = a(arg, target=targets)
        row["first_call_s"] = time.perf_counter() - t0
    except Exception as exc:
        traceback.print_exc()
        return dict(row, outcome="refused", stage=stage, reason=first_line(exc),
                    detail=detail(exc))
    Rs = R if isinstance(R, list) else [R]
    total = sum(np.asarray(r, "float64").reshape(BATCH, -1).sum(axis=1) for r in Rs)
    logit = pred[np.arange(BATCH), targets].astype("float64")
    row.update(outcome="explained", logits=logit.tolist(), sum_R=total.tolist(),
               ratio=(total / logit).tolist(), ratio_mean=float(np.mean(total / logit)),
               nan=bool(any(not np.all(np.isfinite(r)) for r in Rs)))
    try:
        grad = gradient_fn(model, xs)
        tt = tf.constant(targets)
        grad(tt)
        row["gradient_s"] = median_time(lambda: grad(tt))
        row["explain_s"] = median_time(lambda: a(arg, target=targets))
        row["time_ratio"] = row["explain_s"] / row["gradient_s"]
    except Exception as exc:
        traceback.print_exc()
        row["timing_error"] = first_line(exc)
    return row


# ------------------------------------------------------------------------------ processes
def run_child(name: str, args: argparse.Namespace) -> dict:
    """Measure one class in a fresh Python process; its result row."""
    path = args.results / f"{name}.json"
    path.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name,
           "--results", str(args.results)]
    t0 = time.perf_counter()
    try:
        code: Any = subprocess.run(cmd, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
                                   timeout=args.timeout).returncode
    except subprocess.TimeoutExpired:
        code = f"time-out after {args.timeout:.0f} s"
    if path.exists():
        return json.loads(path.read_text())
    row = {"class": name, "family": family(backbone_classes()[name]), "outcome": "crashed",
           "reason": f"child process failed ({code}) after {time.perf_counter() - t0:.0f} s"}
    path.write_text(json.dumps(row, indent=1))
    return row


def worker(name: str, args: argparse.Namespace) -> int:
    try:
        row = measure(name)
    except Exception as exc:  # anything measure() did not expect
        traceback.print_exc()
        row = {"class": name, "outcome": "crashed", "reason": first_line(exc)}
    row["date"] = f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}"
    args.results.mkdir(parents=True, exist_ok=True)
    tmp = args.results / f"{name}.json.tmp"
    tmp.write_text(json.dumps(row, indent=1))
    os.replace(tmp, args.results / f"{name}.json")
    log(f"[{name}] {row['outcome']}: {row.get('reason', '')}")
    return 0


# ------------------------------------------------------------------------------ report
def _f(value: Any, fmt: str = ".3f") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-" if value is None else str(value)
    return format(value, fmt)


def report(rows: Sequence[dict], argv: Sequence[str]) -> str:
    import keras
    import keras_hub
    import tensorflow as tf

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from benchmark import cpu_name
    from zoo import git_commit

    done = [r for r in rows if r["outcome"] == "explained"]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    dates = sorted(r["date"] for r in rows if "date" in r)
    lines = [
        "# KerasHub backbones", "",
        f"`python scripts/hub.py {' '.join(argv)}`; tf_lrp at {git_commit()}; measured "
        f"{dates[0] if dates else '?'} to {dates[-1] if dates else '?'} on {cpu_name()}, "
        f"{os.cpu_count()} cores (CPU only, shared); Python {platform.python_version()}, "
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}, keras-hub {keras_hub.__version__}.",
        "", (__doc__ or "").split("\n\n", 2)[2].split("\n\nResults go")[0].replace("\n", " "), "",
        f"**{len(done)} explained of {len(rows)}** backbone classes ("
        + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) + "). sum(R)/logit is the "
        "mean over the 2 samples; relevance absorbed by position embeddings, biases and "
        "normalisation shifts is not in sum(R), so 1 is not expected everywhere. Times are "
        "indicative (shared machine).", "",
        "| class | family / kind | composite | outcome | sum(R)/logit | logits max diff "
        "| build s | explain / gradient | reason |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = _f(r.get("ratio_mean")) + (" (NaN!)" if r.get("nan") else "")
        lines.append(
            f"| {r['class']} | {r.get('family', '?')} / {r.get('kind', '-')} | "
            f"{r.get('composite', '-')} | {r['outcome']} | {ratio} | "
            f"{_f(r.get('logits_max_diff'), '.1e')} | {_f(r.get('build_s'), '.1f')} | "
            f"{_f(r.get('time_ratio'), '.1f')} | "
            f"{(r.get('stage', '') + ': ' if r.get('stage') else '') + r.get('reason', '')} |"
            .replace("\n", " "))
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--models", default="all", help="comma-separated class names or 'all'")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "HUB.md")
    p.add_argument("--results", type=Path, default=Path("/tmp/hub_results"))
    p.add_argument("--resume", action="store_true", help="keep classes that have a result")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per class")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.worker:
        return worker(args.worker, args)
    everything = list(backbone_classes())
    names = everything if args.models == "all" else [s.strip() for s in args.models.split(",")]
    args.results.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        for i, name in enumerate(names, 1):
            if args.resume and (args.results / f"{name}.json").exists():
                continue
            log(f"== {name} ({i}/{len(names)})")
            run_child(name, args)
    rows = [json.loads(p.read_text()) for n in everything
            if (p := args.results / f"{n}.json").exists()]
    args.out.write_text(report(rows, args.argv))
    log(f"wrote {args.out} ({len(rows)} classes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
