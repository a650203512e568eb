"""Pre-norm transformer blocks with key masks: boolean (True = attend) or an additive float
bias per key (-inf = never attend)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from omnifuse.layers.mlp import MLP


def safe_key_mask(mask: Tensor) -> Tensor:
    """A key mask in which a row with no valid key attends to every key instead.

    Softmax over no keys is NaN; such rows belong to absent inputs whose outputs are
    masked downstream, so any finite value will do. A float mask is an additive bias, passed
    on as it is: whoever builds one keeps a finite key in every row.
    """
    if mask.is_floating_point():
        return mask
    return mask | ~mask.any(dim=-1, keepdim=True)


class Attention(nn.Module):
    """Multi-head attention of `query` tokens over `context` tokens.

    Where few queries read many context tokens (a Perceiver's latents reading every input
    token), the key and value projections are taken through the queries instead of applied to
    every context token: q·(Wk c) = (Wkᵀ q)·c, and, since attention weights sum to 1,
    Σ p (Wv c + bv) = Wv (Σ p c) + bv; the key bias adds the same to every score of a query
    and cancels in the softmax. The same function, with the per-token work of the
    projections gone (`_absorbs` compares the two costs).
    """

    def __init__(self, *, dim: int, heads: int, context_dim: int | None = None) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(context_dim or dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(
        self, query: Tensor, context: Tensor, mask: Tensor | None, *, causal: bool = False
    ) -> Tensor:
        """`mask` (B, M): the valid context tokens, or a float bias added to every query's
        scores (-inf where invalid); None when all are valid and unbiased (then SDPA runs
        without a mask, on its fastest kernel). `causal`: query i reads context positions up to i
        only (query and context the same sequence, as in a text decoder)."""
        if not causal and self._absorbs(query.shape[1], context.shape[1], context.shape[2]):
            return self._through_queries(query, context, mask)
        q = rearrange(self.q(query), "b n (h d) -> b h n d", h=self.heads)
        # keys and values projected apart (halves of one kv weight): each comes out
        # contiguous, where splitting one projection would copy both for the kernel
        dim = self.kv.out_features // 2
        weight, bias = self.kv.weight, self.kv.bias
        k = rearrange(
            F.linear(context, weight[:dim], bias[:dim]), "b m (h d) -> b h m d", h=self.heads
        )
        v = rearrange(
            F.linear(context, weight[dim:], bias[dim:]), "b m (h d) -> b h m d", h=self.heads
        )
        attn_mask = None if mask is None else safe_key_mask(mask)[:, None, None, :]  # (B,1,1,M)
        if causal:
            n, m = query.shape[1], context.shape[1]
            later = torch.ones(n, m, dtype=torch.bool, device=query.device).tril(m - n)
            attn_mask = later if attn_mask is None else attn_mask & later  # (B, 1, N, M)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.out(rearrange(out, "b h n d -> b n (h d)"))

    def _absorbs(self, queries: int, tokens: int, width: int) -> bool:
        """Whether projecting through the queries costs fewer multiply-adds than projecting
        the context: per sample, 2·Q·D·C for the queries and values through the projections
        plus 2·H·Q·M·C for attention over the raw context, against M·2·C·D for the keys and
        values of M context tokens plus 2·Q·M·D for attention."""
        dim = self.q.out_features
        through_queries = 2 * queries * dim * width + 2 * self.heads * queries * tokens * width
        through_context = tokens * 2 * width * dim + 2 * queries * tokens * dim
        return through_queries < through_context

    def _through_queries(self, query: Tensor, context: Tensor, mask: Tensor | None) -> Tensor:
        """The attention with its key and value projections absorbed into the queries (see
        the class): each head's query becomes a vector of the context's width, which one
        shared "head" of raw context tokens answers (SDPA's grouped-query attention)."""
        heads, dim = self.heads, self.q.out_features
        size = dim // heads
        q = rearrange(self.q(query), "b n (h d) -> b h n d", h=heads)
        w_k = self.kv.weight[:dim].view(heads, size, -1)  # (H, d, C)
        w_v = self.kv.weight[dim:].view(heads, size, -1)
        keys = torch.einsum("bhnd,hdc->bhnc", q, w_k)  # (B, H, N, C)
        raw = context[:, None]  # (B, 1, M, C): keys and values alike
        attn_mask = None if mask is None else safe_key_mask(mask)[:, None, None, :]
        read = F.scaled_dot_product_attention(
            keys, raw, raw, attn_mask=attn_mask, scale=size**-0.5, enable_gqa=True
        )  # (B, H, N, C): each head's weighted sum of raw context tokens
        out = torch.einsum("bhnc,hdc->bhnd", read, w_v) + self.kv.bias[dim:].view(heads, 1, size)
        return self.out(rearrange(out, "b h n d -> b n (h d)"))


class CrossAttentionBlock(nn.Module):
    """Queries attend to a context, then an MLP; both residual, pre-norm."""

    def __init__(self, *, dim: int, heads: int, mlp_width: int | None = None) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_c = nn.LayerNorm(dim)
        self.attn = Attention(dim=dim, heads=heads)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = MLP(dim=dim, hidden=mlp_width or 2 * dim)  # hidden units, 2 * dim by default

    def forward(self, query: Tensor, context: Tensor, mask: Tensor | None) -> Tensor:
        query = query + self.attn(self.norm_q(query), self.norm_c(context), mask)
        return query + self.mlp(self.norm_mlp(query))


class SelfAttentionBlock(nn.Module):
    """A transformer encoder layer: tokens attend to the valid tokens of their own sequence."""

    def __init__(self, *, dim: int, heads: int, mlp_width: int | None = None) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = Attention(dim=dim, heads=heads)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = MLP(dim=dim, hidden=mlp_width or 2 * dim)  # hidden units, 2 * dim by default

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """`mask` (B, N): the valid tokens; None when all are."""
        h = self.norm(x)
        x = x + self.attn(h, h, mask)
        return x + self.mlp(self.norm_mlp(x))


class DecoderBlock(nn.Module):
    """A transformer decoder layer, pre-norm: causal self-attention over the text so far,
    cross-attention to a context (the fused tokens, masked), then an MLP; all residual."""

    def __init__(self, *, dim: int, heads: int, mlp_width: int | None = None) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = Attention(dim=dim, heads=heads)
        self.norm_q = nn.LayerNorm(dim)
        self.norm_c = nn.LayerNorm(dim)
        self.cross = Attention(dim=dim, heads=heads)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = MLP(dim=dim, hidden=mlp_width or 2 * dim)  # hidden units, 2 * dim by default

    def forward(self, x: Tensor, context: Tensor, mask: Tensor) -> Tensor:
        """x (B, T, D) text positions, all valid (padding only ever follows them, and causal
        attention never reads ahead); context (B, L, D) with its key mask (B, L)."""
        h = self.norm(x)
        x = x + self.attn(h, h, None, causal=True)
        x = x + self.cross(self.norm_q(x), self.norm_c(context), mask)
        return x + self.mlp(self.norm_mlp(x))


def masked_mean(tokens: Tensor, mask: Tensor) -> Tensor:
    """Mean over valid tokens: (B, N, D), (B, N) -> (B, D); zero where none is valid."""
    weights = mask.to(tokens.dtype).unsqueeze(-1)
    return (tokens * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def sinusoidal_positions(length: int, dim: int) -> Tensor:
    """Fixed sine/cosine position encodings, (length, dim)."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(
        torch.arange(0, dim, 2, dtype=torch.float32) * (-torch.log(torch.tensor(1e4)) / dim)
    )
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return table
