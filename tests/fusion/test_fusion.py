"""Sweep every registered fusion: shapes, gradients, masks respected, order-independent."""

from __future__ import annotations

import pytest
import torch

from omnifuse.modalities import Tokens
from omnifuse.registry import create_fusion, list_fusions

DIM = 16


def inputs(seed: int = 0) -> dict[str, Tokens]:
    g = torch.Generator().manual_seed(seed)
    a = Tokens(torch.randn(3, 5, DIM, generator=g), torch.ones(3, 5, dtype=torch.bool))
    b_mask = torch.tensor([[1, 1, 0], [0, 0, 0], [1, 0, 0]], dtype=torch.bool)
    b = Tokens(torch.randn(3, 3, DIM, generator=g) * b_mask[..., None], b_mask)
    return {"a": a, "b": b}


@pytest.fixture(params=list_fusions())
def fusion(request: pytest.FixtureRequest):
    torch.manual_seed(0)
    return create_fusion(request.param, dim=DIM, modalities=["a", "b"]).eval()


def test_shapes_and_gradients(fusion):
    fusion.train()
    fused = fusion(inputs())
    assert fused.tokens.shape[0] == 3 and fused.tokens.shape[2] == DIM
    assert fused.mask.shape == fused.tokens.shape[:2]
    assert fused.pooled.shape == (3, DIM)
    (fused.tokens.sum() + fused.pooled.sum()).backward()
    for name, param in fusion.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, f"{name} gets no gradient"


def test_masked_tokens_cannot_change_the_output(fusion):
    x = inputs()
    before = fusion(x)
    changed = x["b"].tokens + 100.0 * (~x["b"].mask)[..., None]  # only masked positions move
    after = fusion({"a": x["a"], "b": Tokens(changed, x["b"].mask)})
    torch.testing.assert_close(before.tokens, after.tokens)
    torch.testing.assert_close(before.pooled, after.pooled)


def test_no_nan_when_a_sample_has_no_tokens_at_all(fusion):
    x = inputs()
    nothing = {k: Tokens(v.tokens * 0, torch.zeros_like(v.mask)) for k, v in x.items()}
    fused = fusion(nothing)
    assert torch.isfinite(fused.tokens).all() and torch.isfinite(fused.pooled).all()


def test_dict_order_does_not_matter(fusion):
    x = inputs()
    forward = fusion({"a": x["a"], "b": x["b"]})
    backward = fusion({"b": x["b"], "a": x["a"]})
    torch.testing.assert_close(forward.pooled, backward.pooled)
