"""Peer of bench/gpu-dilated-attention.ts: torchscale's algorithm with the leanest gather and scatter.

The same algorithm as torchscale_dilated.py, with its data movement reduced to one indexed gather per input
and one indexed scatter per output: for each pattern (w, r), cut the sequence into segments of w' = min(w, N),
select in every segment the rows whose offset is h mod r for head h (the segment padded to a multiple of r)
by advanced indexing, run PyTorch's FlashAttention kernel (aten._scaled_dot_product_flash_attention, which
also returns the log-sum-exp) on the selected rows of every (segment, head), scatter the outputs and
log-sum-exps back into zero/-inf dense [B, N, H, ...] tensors, and mix the patterns with weights
softmax_i(lse_i), computed without gradient as torchscale does. A stronger peer than torchscale's own tensor
program. Input layout [B, N, H, D] in bf16, causal.

    python3 bench/peers/gather_dilated.py --lengths 32768,65536
"""
import torch

from common import emit, info, measure_attention, parse_args, run_lengths
from dilated_reference import check


def sparse_index(heads, r, device):
    """Slot (offset inside each group of r rows) and head index pairs: head h reads slot h mod r."""
    h = torch.arange(heads, device=device)
    return h % r, h


def pattern(q, k, v, w, r, causal, scale):
    """Output [B, N, H, D] and lse [B, N, H] (float32, -inf where the row is not selected) of one pattern."""
    b, n, heads, d = q.shape
    seg = min(w, n)
    assert n % seg == 0, "lengths must be multiples of the segments"
    s = n // seg
    padded = -(-seg // r) * r
    slots, hidx = sparse_index(heads, r, q.device)

    def gather(x):
        x = x.view(b, s, seg, heads, d)
        if padded != seg:
            x = torch.nn.functional.pad(x, (0, 0, 0, 0, 0, padded - seg))
        x = x.view(b, s, padded // r, r, heads, d)
        # advanced indexing on (slot, head) pairs: [b, s, padded/r, heads, d]
        x = x[:, :, :, slots, hidx, :]
        # FlashAttention layout: [batch * segments, heads, rows, d]
        return x.reshape(b * s, padded // r, heads, d).transpose(1, 2)

    qs, ks, vs = gather(q), gather(k), gather(v)
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention(qs, ks, vs, 0.0, causal, False, scale=scale)[:2]
    lse = lse[..., : padded // r]
    out = out.transpose(1, 2).reshape(b, s, padded // r, heads, d)
    lse = lse.transpose(1, 2).reshape(b, s, padded // r, heads)

    # scatter back (differentiable in out): the unselected rows stay 0, their lse -inf
    dense = out.new_zeros(b, s, padded // r, r, heads, d)
    dense[:, :, :, slots, hidx, :] = out
    dense_lse = lse.new_full((b, s, padded // r, r, heads), float("-inf"))
    dense_lse[:, :, :, slots, hidx] = lse
    dense = dense.view(b, s, padded, heads, d)[:, :, :seg].reshape(b, n, heads, d)
    dense_lse = dense_lse.view(b, s, padded, heads)[:, :, :seg].reshape(b, n, heads)
    return dense, dense_lse


def dilated_attention(q, k, v, segments, dilations, causal=True):
    scale = q.shape[-1] ** -0.5
    outs, lses = [], []
    for w, r in zip(segments, dilations):
        o, l = pattern(q, k, v, w, r, causal, scale)
        outs.append(o)
        lses.append(l)
    with torch.no_grad():
        weights = torch.softmax(torch.stack(lses, dim=0), dim=0).to(q.dtype).unsqueeze(-1)
    out = outs[0] * weights[0]
    for i in range(1, len(outs)):
        out = out + outs[i] * weights[i]
    return out


def main():
    args = parse_args(__doc__)
    info({"peer": "gather_dilated"})
    torch.manual_seed(args.seed)
    check("torchscale-gather", dilated_attention, "paper", emit)
    h, d, bsz = args.heads, args.dim, args.batch

    def measure(n):
        return measure_attention((bsz, n, h, d), lambda q, k, v: dilated_attention(q, k, v, args.segments, args.dilations), args)

    run_lengths("torchscale-gather", args, measure)


if __name__ == "__main__":
    main()
