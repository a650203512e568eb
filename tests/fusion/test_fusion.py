"""Sweep every registered fusion: shapes, gradients, masks respected, absent modalities inert,
order-independent, no NaN, able to overfit, sized to a parameter budget."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from omnifuse.errors import ConfigError
from omnifuse.fusion.base import count_parameters
from omnifuse.heads.query import QueryDecoder, QueryHead
from omnifuse.interfaces import Fused, Tokens
from omnifuse.registry import create_fusion, list_fusions

DIM = 16
MODALITIES = ["a", "b"]

# option sets to sweep beyond the defaults; every registered fusion gets at least one
VARIANTS: dict[str, list[dict[str, Any]]] = {
    "unimodal": [{"modality": "a"}, {"modality": "b"}],
    "late": [{}, {"combine": "mean"}],
    "perceiver": [{}, {"balance": False}],
}
CASES = [(name, options) for name in list_fusions() for options in VARIANTS.get(name, [{}])]
IDS = [name + "".join(f"-{v}" for v in options.values()) for name, options in CASES]


def build(name: str, options: dict[str, Any], modalities: list[str] = MODALITIES) -> nn.Module:
    torch.manual_seed(0)
    return create_fusion(name, dim=DIM, modalities=modalities, **options)


@pytest.fixture(params=CASES, ids=IDS)
def case(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    return request.param


@pytest.fixture
def fusion(case: tuple[str, dict[str, Any]]) -> nn.Module:
    return build(*case).eval()


def tokens(mask: Tensor, seed: int) -> Tokens:
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(*mask.shape, DIM, generator=g)
    return Tokens(values * mask[..., None], mask)


def inputs() -> dict[str, Tokens]:
    """Four samples: both modalities (b padded), only a, only b, neither."""
    a = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]])
    b = torch.tensor([[1, 1, 0], [0, 0, 0], [1, 0, 0], [0, 0, 0]])
    return {"a": tokens(a.bool(), 1), "b": tokens(b.bool(), 2)}


def tensors(fused: Fused) -> Iterator[Tensor]:
    """Everything a fusion outputs, the parts and weights of a late fusion included."""
    yield from (fused.tokens, fused.mask, fused.pooled)
    for name in sorted(fused.parts or {}):
        yield from tensors(fused.parts[name])  # type: ignore[index]
    for name in sorted(fused.weights or {}):
        yield fused.weights[name]  # type: ignore[index]


def assert_same(first: Fused, second: Fused) -> None:
    for x, y in zip(tensors(first), tensors(second), strict=True):
        torch.testing.assert_close(x, y)


def test_every_strategy_of_the_issue_is_registered():
    expected = {"early", "late", "tensor", "low_rank", "cross_attention", "bottleneck"}
    assert expected | {"perceiver", "gmu", "unimodal"} <= set(list_fusions())


def test_shapes_and_gradients(fusion):
    fusion.train()
    fused = fusion(inputs())
    assert fused.tokens.shape[0] == 4 and fused.tokens.shape[2] == DIM
    assert fused.mask.shape == fused.tokens.shape[:2] and fused.mask.dtype == torch.bool
    assert fused.pooled.shape == (4, DIM)
    if fused.tokens.shape[1] == 1:  # a vector, as a single always-valid token
        assert fused.mask.all()
    if fused.parts is not None:  # late fusion: one part per modality
        assert fused.parts is not None and fused.weights is not None
        assert sorted(fused.parts) == sorted(fused.weights) == MODALITIES
        total = sum(fused.weights.values())
        torch.testing.assert_close(total, torch.ones(4))
    # a random readout: a plain sum of a LayerNorm's output has no gradient at all
    g = torch.Generator().manual_seed(0)
    outputs = [t for t in tensors(fused) if t.is_floating_point()]
    sum((t * torch.randn(t.shape, generator=g)).sum() for t in outputs).backward()
    for name, param in fusion.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, f"{name} gets no gradient"


def test_masked_and_absent_content_cannot_change_the_output(fusion):
    x = inputs()
    before = fusion(x)
    moved = {  # every masked position moves, absent samples' tokens included
        k: Tokens(v.tokens + 100.0 * torch.randn_like(v.tokens) * (~v.mask)[..., None], v.mask)
        for k, v in x.items()
    }
    assert_same(before, fusion(moved))


def test_masked_outputs_are_zero(fusion):
    fused = fusion(inputs())
    assert (fused.tokens[~fused.mask] == 0).all()


def test_no_nan_when_a_sample_has_no_tokens_at_all(fusion):
    fusion.train()
    x = inputs()
    nothing = {k: Tokens(v.tokens * 0, torch.zeros_like(v.mask)) for k, v in x.items()}
    fused = fusion(nothing)
    assert all(torch.isfinite(t).all() for t in tensors(fused) if t.is_floating_point())
    fused.pooled.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in fusion.parameters() if p.grad is not None)


def test_only_one_modality_present_in_the_whole_batch(fusion):
    x = inputs()
    for gone in MODALITIES:
        mask = torch.zeros_like(x[gone].mask)
        without = x | {gone: Tokens(torch.zeros_like(x[gone].tokens), mask)}
        noise = x | {gone: Tokens(torch.randn_like(x[gone].tokens) * 50, mask)}
        fused = fusion(without)
        assert all(torch.isfinite(t).all() for t in tensors(fused) if t.is_floating_point())
        assert_same(fused, fusion(noise))


def test_dict_order_does_not_matter(fusion):
    x = inputs()
    assert_same(fusion({"a": x["a"], "b": x["b"]}), fusion({"b": x["b"], "a": x["a"]}))


def test_samples_do_not_see_each_other(fusion):
    x = inputs()
    whole = fusion(x)
    for i in range(4):
        alone = fusion({k: Tokens(v.tokens[i : i + 1], v.mask[i : i + 1]) for k, v in x.items()})
        torch.testing.assert_close(alone.pooled, whole.pooled[i : i + 1])


def test_single_modality_config_works(case):
    name, options = case
    if name == "unimodal":
        options = {}  # the only modality is the default
    fusion = build(name, options, modalities=["a"]).eval()
    fused = fusion({"a": inputs()["a"]})
    assert fused.pooled.shape == (4, DIM) and torch.isfinite(fused.pooled).all()


class Classifier(nn.Module):
    """A fusion, the shared query decoder and one classification head, as in the model."""

    def __init__(self, fusion: nn.Module, classes: int) -> None:
        super().__init__()
        self.fusion = fusion
        self.decoder = QueryDecoder(dim=DIM)
        self.head = QueryHead(dim=DIM, out=classes)

    def forward(self, x: dict[str, Tokens]) -> Tensor:
        def predict(part: Fused) -> dict[str, Tensor]:
            read = self.decoder(part, {"y": self.head.queries})["y"]
            return {"y": self.head(read)[:, 0]}

        return self.fusion(x).combine(predict)["y"]


def test_overfits_32_samples(case):
    name, options = case
    torch.manual_seed(0)
    lengths = {"a": torch.randint(2, 6, (32,)), "b": torch.randint(1, 4, (32,))}
    x = {
        m: tokens(torch.arange(n)[None, :] < lengths[m][:, None], seed)
        for m, n, seed in (("a", 5, 3), ("b", 3, 4))
    }
    y = torch.randint(0, 4, (32,))
    model = Classifier(build(name, options), classes=4)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):  # Adam at 1e-2 can spike on the way (the unbalanced Perceiver at 75)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    final = F.cross_entropy(model(x), y).item()
    assert final < 0.05, f"{name}: loss {final:.3f} after 150 steps"


def test_late_fusion_is_late():
    """Predictions are the weighted mean of per-modality predictions: swapping b between two
    samples that both have a and b moves the two predictions by opposite amounts, exactly."""
    torch.manual_seed(0)
    model = Classifier(create_fusion("late", dim=DIM, modalities=MODALITIES), classes=3).eval()
    mask = torch.ones(2, 3, dtype=torch.bool)
    a, b = tokens(mask, 5), tokens(mask, 6)
    swapped = Tokens(b.tokens.flip(0), mask)
    same = model({"a": a, "b": b})
    crossed = model({"a": a, "b": swapped})
    # f(a1, b1) + f(a2, b2) == f(a1, b2) + f(a2, b1) holds for additive predictors only
    torch.testing.assert_close(same.sum(0), crossed.sum(0))


def test_late_fusion_weights_cover_the_modalities_present():
    torch.manual_seed(0)
    fusion = create_fusion("late", dim=DIM, modalities=MODALITIES, combine="mean")
    fused = fusion(inputs())
    weights = torch.stack([fused.weights["a"], fused.weights["b"]], 1)
    expected = torch.tensor([[0.5, 0.5], [1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    torch.testing.assert_close(weights, expected)


def test_early_fusion_is_not_additive():
    """The counterpart of test_late_fusion_is_late: a fusion that models interactions."""
    torch.manual_seed(0)
    model = Classifier(create_fusion("early", dim=DIM, modalities=MODALITIES), classes=3).eval()
    mask = torch.ones(2, 3, dtype=torch.bool)
    a, b = tokens(mask, 5), tokens(mask, 6)
    same = model({"a": a, "b": b}).sum(0)
    crossed = model({"a": a, "b": Tokens(b.tokens.flip(0), mask)}).sum(0)
    assert not torch.allclose(same, crossed)


@pytest.mark.parametrize("name", list_fusions())
def test_budget_picks_the_closest_width(name: str):
    options = {"modality": "a"} if name == "unimodal" else {}
    budget = 20_000
    fusion = build(name, {"budget": budget, **options})
    chosen = count_parameters(fusion)
    assert abs(chosen - budget) / budget < 0.1, f"{name}: {chosen} parameters for {budget}"
    assert count_parameters(build(name, {"width": fusion.width, **options})) == chosen
    for width in (fusion.width - 1, fusion.width + 1):  # neighbouring widths are no closer
        if width >= 1:
            count = count_parameters(build(name, {"width": width, **options}))
            assert abs(count - budget) >= abs(chosen - budget)


def test_budget_does_not_touch_the_random_state():
    torch.manual_seed(0)
    budgeted = create_fusion("early", dim=DIM, modalities=MODALITIES, budget=30_000)
    after_budgeted = torch.rand(3)
    torch.manual_seed(0)
    plain = create_fusion("early", dim=DIM, modalities=MODALITIES, width=budgeted.width)
    torch.testing.assert_close(torch.rand(3), after_budgeted)
    for x, y in zip(budgeted.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(x, y)


def test_width_and_budget_together_are_refused():
    with pytest.raises(ConfigError, match="set 'width' or 'budget', not both"):
        create_fusion("early", dim=DIM, modalities=MODALITIES, width=8, budget=1000)


def test_unimodal_checks_its_modality():
    with pytest.raises(ConfigError, match=r"model\.fusion\.modality: required with several"):
        create_fusion("unimodal", dim=DIM, modalities=MODALITIES)
    with pytest.raises(
        ConfigError,
        match=r"unknown modality 'imgae' \(did you mean 'image'\?\); the config defines audio, "
        r"image",
    ):
        create_fusion("unimodal", dim=DIM, modalities=["image", "audio"], modality="imgae")


def test_unimodal_reads_only_its_modality():
    fusion = build("unimodal", {"modality": "a"}).eval()
    x = inputs()
    other = x | {"b": tokens(torch.ones(4, 3, dtype=torch.bool), 9)}
    assert_same(fusion(x), fusion(other))


def test_attention_without_a_mask_is_attention_with_every_key_valid():
    """mask=None (SDPA's unmasked kernel) computes what an all-True mask does."""
    from omnifuse.layers.attention import Attention

    torch.manual_seed(0)
    attention = Attention(dim=16, heads=4)
    query, context = torch.randn(3, 5, 16), torch.randn(3, 9, 16)
    every = torch.ones(3, 9, dtype=torch.bool)
    torch.testing.assert_close(attention(query, context, None), attention(query, context, every))
    causal = attention(context, context, None, causal=True)
    torch.testing.assert_close(causal, attention(context, context, every, causal=True))
    # causal: position 0 reads only itself, so later positions cannot change it
    changed = context.clone()
    changed[:, 1:] += 1.0
    torch.testing.assert_close(attention(changed, changed, None, causal=True)[:, 0], causal[:, 0])


@pytest.mark.parametrize("heads", [1, 4])
def test_attention_through_the_queries_is_the_attention_through_the_context(heads: int):
    """Few queries over many tokens take the projections through the queries: the same
    outputs and gradients as projecting every token, masked tokens excluded alike."""
    from omnifuse.layers.attention import Attention

    torch.manual_seed(0)
    attention = Attention(dim=16, heads=heads, context_dim=12)
    query, context = torch.randn(3, 2, 16), torch.randn(3, 40, 12, requires_grad=True)
    mask = torch.rand(3, 40) > 0.3
    mask[2] = False  # a sample with no valid token attends to every token, as SDPA would
    assert attention._absorbs(2, 40, 12)  # 2 queries: far fewer multiply-adds
    assert attention._absorbs(40, 40, 12) == (heads == 1)  # 4 heads over 40: the context's
    results = []
    for absorb in (True, False):
        attention._absorbs = lambda *_, absorb=absorb: absorb  # type: ignore[method-assign]
        out = attention(query, context, mask)
        grads = torch.autograd.grad(out.square().sum(), [context, attention.kv.weight])
        results.append((out, *grads))
    for through_queries, through_context in zip(*results, strict=True):
        torch.testing.assert_close(through_queries, through_context, atol=1e-5, rtol=1e-4)
    changed = context.detach().clone()
    changed[~mask] += 5.0  # masked tokens cannot change the output of a sample with valid ones
    del attention._absorbs
    torch.testing.assert_close(attention(query, changed, mask)[:2], results[0][0][:2])


def test_perceiver_cross_heads_default_to_heads():
    same = create_fusion("perceiver", dim=16, modalities=["a"], heads=4)
    one = create_fusion("perceiver", dim=16, modalities=["a"], heads=4, cross_heads=1)
    assert same.cross.attn.heads == 4 and one.cross.attn.heads == 1
    assert all(block.attn.heads == 4 for block in one.blocks)
    tokens = {"a": Tokens(torch.randn(2, 6, 16), torch.ones(2, 6, dtype=torch.bool))}
    assert one(tokens).tokens.shape == (2, 16, 16)


def test_perceiver_balance_weighs_a_modality_not_its_token_count():
    """With `balance`, the cross-attention's offsets give each present modality the same
    prior share whatever its number of valid tokens, and the null token the share of one
    token among all; without it, shares follow token counts. An all-valid single modality
    needs no offset (SDPA's unmasked kernel)."""
    a = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]]).bool()
    b = torch.ones(3, 7, dtype=torch.bool)
    context = torch.cat([torch.ones(3, 1, dtype=torch.bool), a, b], 1)
    balanced = create_fusion("perceiver", dim=16, modalities=["a", "b"])
    plain = create_fusion("perceiver", dim=16, modalities=["a", "b"], balance=False)
    weights = balanced._key_mask([a, b], context).softmax(-1)  # at equal scores
    share_a, share_b, null = weights[:, 1:5].sum(1), weights[:, 5:].sum(1), weights[:, 0]
    torch.testing.assert_close(share_a[:2], share_b[:2])  # 4 or 2 tokens against 7
    assert share_a[2] == 0 and share_b[2] > 0.85  # no valid `a`: `b` and the null token
    torch.testing.assert_close(null / share_b, 1 / (a.sum(1) + 7).float())  # 1 / valid tokens
    assert plain._key_mask([a, b], context).dtype == torch.bool  # padding: a boolean mask
    every = torch.ones(3, 5, dtype=torch.bool)
    assert plain._key_mask([every, b], torch.ones(3, 13, dtype=torch.bool)) is None
    assert balanced._key_mask([b], torch.ones(3, 8, dtype=torch.bool)) is None
