"""Pretrained audio encoders from a local Hugging Face directory: wav2vec2 (and its HuBERT and
WavLM relatives) on raw waveforms, or the encoder of Whisper on its own log-mel features.

Inputs come from the audio modality with `features: waveform`: (B, samples) at `sample_rate`,
which must be the rate the model was trained at (16 kHz for both families). wav2vec2 gets each
waveform normalised to zero mean and unit variance over its valid samples, and gives one token
per 20 ms; Whisper's feature extractor (from the directory's preprocessor_config.json) pads
every clip to its fixed window, and the tokens covering the clip itself are kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from omnifuse.errors import ConfigError
from omnifuse.interfaces import Tokens
from omnifuse.pretrained.encoder import Backbone, PretrainedEncoder, Train, require
from omnifuse.pretrained.hf import (
    load_config,
    load_model,
    model_directory,
    preprocessor_config,
    transformer_blocks,
)
from omnifuse.registry import register_encoder

WAVEFORM_MODELS = ("wav2vec2", "hubert", "wavlm")


class Wav2Vec2Backbone(Backbone):
    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model
        config: Any = model.config
        self.width = config.hidden_size
        # layer-normalised feature encoders were trained with an attention mask, the others
        # on zero padding (as Hugging Face's feature extractors do)
        self.use_mask = config.feat_extract_norm == "layer"
        shortest = 1  # the fewest samples that make one frame
        for kernel, stride in reversed(
            list(zip(config.conv_kernel, config.conv_stride, strict=True))
        ):
            shortest = (shortest - 1) * stride + kernel
        self.shortest = shortest

    def blocks(self) -> Sequence[nn.Module]:
        return transformer_blocks(self.model, "audio_hf")

    def forward(self, x: Tensor, lengths: Tensor) -> Tokens:
        valid = torch.arange(x.shape[1], device=x.device) < lengths[:, None]  # (B, samples)
        count = lengths.clamp(min=1)[:, None]
        mean = (x * valid).sum(1, keepdim=True) / count
        var = (((x - mean) * valid) ** 2).sum(1, keepdim=True) / count
        waves = (x - mean) / torch.sqrt(var + 1e-7) * valid
        waves = F.pad(waves, (0, max(0, self.shortest - waves.shape[1])))
        mask = F.pad(valid, (0, waves.shape[1] - valid.shape[1]))
        out = self.model(waves, attention_mask=mask.long() if self.use_mask else None)
        hidden = out.last_hidden_state  # (B, frames, width)
        frames = self.model._get_feat_extract_output_lengths(lengths.clamp(min=self.shortest))
        tokens = torch.arange(hidden.shape[1], device=x.device) < frames[:, None]
        return Tokens(hidden, tokens)


class WhisperBackbone(Backbone):
    def __init__(self, encoder: Any, extractor: Any) -> None:
        super().__init__()
        self.encoder = encoder
        self.extractor = extractor
        self.width = encoder.config.d_model
        self.hop: int = extractor.hop_length

    def blocks(self) -> Sequence[nn.Module]:
        return transformer_blocks(self.encoder, "audio_hf")

    def forward(self, x: Tensor, lengths: Tensor) -> Tokens:
        waves = [row[:n].cpu().numpy() for row, n in zip(x, lengths.tolist(), strict=True)]
        features = self.extractor(
            waves, sampling_rate=self.extractor.sampling_rate, return_tensors="pt"
        ).input_features.to(x.device)  # (B, n_mels, window frames)
        hidden = self.encoder(features).last_hidden_state  # (B, window frames / 2, width)
        frames = lengths // self.hop + 1  # mel frames of the clip; two per token
        tokens = torch.arange(hidden.shape[1], device=x.device) < ((frames + 1) // 2)[:, None]
        return Tokens(hidden, tokens)


def whisper_backbone(directory: Path, config: Any) -> WhisperBackbone:
    transformers = require("transformers", "audio_hf")
    extractor = transformers.WhisperFeatureExtractor.from_pretrained(
        directory, local_files_only=True
    )
    window = 2 * config.max_source_positions  # the encoder's two convolutions halve the frames
    if extractor.nb_max_frames != window:
        raise ConfigError(
            f"encoder 'audio_hf': {directory}'s feature extractor makes {extractor.nb_max_frames} "
            f"frames, its Whisper encoder expects {window}"
        )
    encoder = load_model(directory, "audio_hf", "WhisperModel").get_encoder()  # type: ignore[operator]
    return WhisperBackbone(encoder, extractor)


@register_encoder("audio_hf", kinds=("audio",), needs={"features": "waveform"})
def audio_hf(
    dim: int,
    n_mels: int,
    sample_rate: int,
    *,
    path: str,
    train: Train = "none",
    cache: bool = True,
    cache_dir: str | None = None,
) -> PretrainedEncoder:
    """A local Hugging Face directory holding a wav2vec2 (HuBERT, WavLM) model or a Whisper
    model (its encoder is used); loaded offline. The audio modality must give `features:
    waveform` at the model's sample rate."""
    directory = model_directory(path, "audio_hf")
    config = load_config(directory, "audio_hf")
    expected = preprocessor_config(directory).get("sampling_rate", 16000)
    if sample_rate != expected:
        raise ConfigError(
            f"encoder 'audio_hf': the audio modality's sample_rate is {sample_rate}, "
            f"the model at {path} expects {expected}"
        )
    backbone: Backbone
    if config.model_type == "whisper":
        backbone = whisper_backbone(directory, config)
    elif config.model_type in WAVEFORM_MODELS:
        backbone = Wav2Vec2Backbone(load_model(directory, "audio_hf"))
    else:
        raise ConfigError(
            f"encoder 'audio_hf' option path: {path} holds a '{config.model_type}' model; "
            f"supported: whisper, {', '.join(WAVEFORM_MODELS)}"
        )
    return PretrainedEncoder(
        backbone, dim=dim, train=train, cache=cache, cache_dir=cache_dir, name="audio_hf"
    )
