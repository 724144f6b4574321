"""Building blocks the heads share: positions, the masked time mean, and attention whose memory
grows with the sequence length, not its square. ``mask`` / ``pad``: True where a row is real /
padding; padding never changes an output."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def sinusoid(t: int, dim: int, device) -> torch.Tensor:
    pos = torch.arange(t, device=device, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(1e4) / dim))
    pe = torch.zeros(t, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)[:, : dim // 2]
    return pe


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp(min=1)


# elements of one chunk's attention weights (B x H x rows x keys) on the CPU with dropout
CHUNK_ELEMENTS = 2 ** 20


def attention(mha: nn.MultiheadAttention, x, memory, memory_pad) -> torch.Tensor:
    """``mha(x, memory, memory, key_padding_mask=memory_pad)`` with its own weights, computed by
    ``scaled_dot_product_attention`` with a broadcast key-padding mask: memory grows with the
    sequence length, not its square (nn.MultiheadAttention keeps the L x L weights in training,
    18 GB for a batch of 8 clips of 1500 rows on a CPU)."""
    b, lq, d = x.shape
    h = mha.num_heads
    w, bias = mha.in_proj_weight, mha.in_proj_bias
    q, k, v = F.linear(x, w[:d], bias[:d]), F.linear(memory, w[d:2 * d], bias[d:2 * d]), \
        F.linear(memory, w[2 * d:], bias[2 * d:])
    q, k, v = (t.view(b, -1, h, d // h).transpose(1, 2) for t in (q, k, v))
    keep = None if memory_pad is None else ~memory_pad[:, None, None, :]
    p = mha.dropout if mha.training else 0.0
    if p and q.device.type == "cpu" and b * h * lq * k.shape[2] > CHUNK_ELEMENTS:
        out = sdpa_in_chunks(q, k, v, keep, p)
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=p)
    return mha.out_proj(out.transpose(1, 2).reshape(b, lq, d))


def sdpa_in_chunks(q, k, v, keep, p: float, elements: int = CHUNK_ELEMENTS) -> torch.Tensor:
    """Attention with dropout, queries a chunk at a time. PyTorch's CPU kernels that avoid the
    weights matrix take no dropout, so the fallback holds B x H x Lq x Lk weights, and autograd
    keeps them for the backward pass (gigabytes for one batch of long clips). Each chunk is
    recomputed in the backward pass instead (``checkpoint`` replays its dropout mask), so the
    peak is one chunk's weights."""
    from torch.utils.checkpoint import checkpoint
    b, h, lq, lk = q.shape[0], q.shape[1], q.shape[2], k.shape[2]
    step = max(1, elements // (b * h * lk))
    return torch.cat([checkpoint(F.scaled_dot_product_attention, q[:, :, s:s + step], k, v, keep, p,
                                 use_reentrant=False) for s in range(0, lq, step)], 2)


def encoder_layer(layer: nn.TransformerEncoderLayer, x, pad) -> torch.Tensor:
    """A pre-norm ``nn.TransformerEncoderLayer`` (its own weights) with :func:`attention`, whose
    memory grows with the sequence, not its square."""
    y = layer.norm1(x)
    x = x + layer.dropout1(attention(layer.self_attn, y, y, pad))
    return x + layer.dropout2(layer.linear2(layer.dropout(layer.activation(layer.linear1(layer.norm2(x))))))
