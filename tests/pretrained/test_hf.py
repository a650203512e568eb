"""Local Hugging Face directories (tiny random BERT, ViT, CLIP, wav2vec2, Whisper) as encoders."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from omnifuse.errors import ConfigError
from omnifuse.modalities.text import encode_bytes
from omnifuse.pretrained.encoder import PretrainedEncoder
from omnifuse.registry import create_encoder

DIM = 16


def text_batch() -> tuple[Tensor, Tensor]:
    rows = [encode_bytes(t, 40) for t in ["the cat sat on the mat", "a red dog", "blue"]]
    x = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
    x = torch.cat([x, torch.zeros_like(x[:1])])  # an absent fourth sample
    return x, torch.tensor([len(r) for r in rows] + [0])


def image_batch() -> tuple[Tensor, Tensor]:
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    x[3] = 0
    return x, torch.tensor([32, 32, 32, 0])


def audio_batch() -> tuple[Tensor, Tensor]:
    x = torch.randn(4, 3200, generator=torch.Generator().manual_seed(0)) * 0.1
    lengths = torch.tensor([3200, 1600, 800, 0])
    x[torch.arange(3200) >= lengths[:, None]] = 0
    return x, lengths


CASES: dict[str, tuple[str, str, dict[str, Any], Callable[[], tuple[Tensor, Tensor]]]] = {
    "bert": ("text_hf", "bert_dir", {"max_length": 40}, text_batch),
    "vit": ("image_hf", "vit_dir", {"size": 32}, image_batch),
    "clip": ("image_hf", "clip_dir", {"size": 32}, image_batch),
    "wav2vec2": ("audio_hf", "wav2vec2_dir", {"n_mels": 64, "sample_rate": 16000}, audio_batch),
    "whisper": ("audio_hf", "whisper_dir", {"n_mels": 64, "sample_rate": 16000}, audio_batch),
}


def build(case: str, request: pytest.FixtureRequest, **options: Any) -> PretrainedEncoder:
    builder, fixture, injected, _ = CASES[case]
    path = request.getfixturevalue(fixture)
    return create_encoder(builder, dim=DIM, **injected, path=str(path), **options)


@pytest.mark.parametrize("case", CASES)
def test_tokens_have_dim_and_absent_samples_are_masked(case: str, request):
    encoder = build(case, request)
    x, lengths = CASES[case][3]()
    out = encoder(x, lengths)
    assert out.tokens.shape[0] == 4 and out.tokens.shape[2] == DIM
    assert out.mask.shape == out.tokens.shape[:2]
    assert out.mask[:3].any(dim=1).all() and not out.mask[3].any()
    assert torch.isfinite(out.tokens).all()


@pytest.mark.parametrize("case", ["bert", "wav2vec2", "whisper"])
def test_longer_inputs_get_more_tokens(case: str, request):
    encoder = build(case, request)
    counts = encoder(*CASES[case][3]()).mask.sum(dim=1).tolist()
    assert counts[0] > counts[1] > counts[2] > counts[3] == 0


@pytest.mark.parametrize("case", CASES)
def test_a_batch_with_every_sample_absent_is_finite_and_masked(case: str, request):
    encoder = build(case, request)
    x, lengths = CASES[case][3]()
    out = encoder(torch.zeros_like(x), torch.zeros_like(lengths))
    assert out.tokens.shape == (4, 1, DIM) and not out.mask.any()
    assert torch.isfinite(out.tokens).all()


@pytest.mark.parametrize("case", CASES)
def test_train_all_gives_every_backbone_parameter_a_gradient(case: str, request):
    encoder = build(case, request, train="all").train()
    x, lengths = CASES[case][3]()
    out = encoder(x, lengths)
    (out.tokens * out.mask[..., None]).square().mean().backward()
    # Whisper's encoder keeps fixed sinusoidal positions, CLIP its post-pool norm (unused here)
    unused = ("embed_positions", "post_layernorm")
    for name, parameter in encoder.named_parameters():
        if not any(u in name for u in unused):
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("case", ["bert", "clip", "wav2vec2"])
def test_train_last_block_trains_only_it_and_the_projection(case: str, request):
    encoder = build(case, request, train=1).train()
    blocks = list(encoder.backbone.blocks())
    trainable = {n for n, p in encoder.named_parameters() if p.requires_grad}
    last = {f"{n}." for n, m in encoder.named_modules() if m is blocks[-1]}
    assert trainable and all(n.startswith(("project.", *last)) for n in trainable)
    assert blocks[-1].training and not blocks[0].training  # frozen blocks stay in eval mode
    x, lengths = CASES[case][3]()
    encoder(x, lengths).tokens.sum().backward()
    assert all(p.grad is not None for p in encoder.parameters() if p.requires_grad)


def test_vit_at_another_size_interpolates_positions(vit_dir: Path):
    encoder = create_encoder("image_hf", dim=DIM, size=48, path=str(vit_dir))
    out = encoder(torch.randn(2, 3, 48, 48), torch.tensor([48, 48]))
    assert out.tokens.shape == (2, 1 + 6 * 6, DIM)


def test_a_folder_that_is_no_model_names_the_option_and_path(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"option path: not a Hugging Face model directory .*"):
        create_encoder("text_hf", dim=DIM, max_length=8, path=str(tmp_path / "nowhere"))


def test_an_unsupported_model_type_is_named(bert_dir: Path):
    with pytest.raises(ConfigError, match=r"holds a 'bert' model; supported: vit, clip"):
        create_encoder("image_hf", dim=DIM, size=32, path=str(bert_dir))


def test_mismatched_sample_rate_and_patch_size_are_config_errors(wav2vec2_dir, vit_dir):
    with pytest.raises(ConfigError, match=r"sample_rate is 8000.*expects 16000"):
        create_encoder("audio_hf", dim=DIM, n_mels=8, sample_rate=8000, path=str(wav2vec2_dir))
    with pytest.raises(ConfigError, match="image size 36 is not a multiple of the model's patch"):
        create_encoder("image_hf", dim=DIM, size=36, path=str(vit_dir))
