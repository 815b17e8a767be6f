"""Peer of bench/gpu-dilated-attention.ts: torchscale's DilatedAttention, step for step.

The tensor program of torchscale's DilatedAttention (torchscale/component/dilated_attention.py) from its
[B, N, H, D] q, k, v to its mixed output, written here with plain torch views, permutes and reshapes, and
with PyTorch's FlashAttention kernel (aten._scaled_dot_product_flash_attention, which also returns the
log-sum-exp) where torchscale calls flash_attn_func. For each pattern (w, r), separately for q, k and v:
cut the sequence into segments of w' = min(w, N), pad each segment to a multiple of r and the heads to a
multiple of r, take the diagonal of the (row mod r, head group) grid (torchscale's head offsets: head group
j reads offset j), and copy to a [(segments * H), rows, D] tensor. After the kernel, each pattern's output
and log-sum-exp go back to the dense layout through diag_embed (zeros off the diagonal, log-sum-exp -1e8
there), then the patterns mix with weights exp(lse_i - max) / sum, computed without gradient. Every copy,
padding and temporary that torchscale's code makes is made here too, so time and memory are those of
torchscale's module; gather_dilated.py is the same algorithm with the data movement cut to one gather and
one scatter. Input layout [B, N, H, D] in bf16, causal; N a multiple of every segment length.

    python3 bench/peers/torchscale_dilated.py --lengths 32768,65536
"""
import torch
import torch.nn.functional as F

from common import emit, info, measure_attention, parse_args, run_lengths
from dilated_reference import check


def pad_to(n, multiple):
    return -n % multiple


def dense_to_sparse(x, r):
    """[S, g, H, D] segments -> [S, ceil(g/r), H, D]: the rows of each head's offset, head group j at offset j."""
    s, g, heads, d = x.shape
    rows, head_pad = pad_to(g, r), pad_to(heads, r)
    if rows or head_pad:
        x = F.pad(x, (0, 0, 0, head_pad, 0, rows))
    length, groups = (g + rows) // r, (heads + head_pad) // r
    # (length r1) (r2 groups) d -> length groups d r1 r2, then the r1 == r2 diagonal
    x = x.view(s, length, r, r, groups, d).permute(0, 1, 4, 5, 2, 3)
    x = torch.diagonal(x, offset=0, dim1=4, dim2=5)
    # length groups d r -> length (r groups) d: a copy
    x = x.permute(0, 1, 4, 2, 3).reshape(s, length, r * groups, d)
    return x[:, :, :heads] if head_pad else x


def gathering(x, w, r):
    """[B, N, H, D] -> [(B * segments) * H, rows, D] of one pattern's selected rows."""
    b, n, heads, d = x.shape
    seg = min(w, n)
    if pad_to(n, seg):
        x = F.pad(x, (0, 0, 0, 0, 0, pad_to(n, seg)))
    x = x.reshape(-1, seg, heads, d)
    x = dense_to_sparse(x, r)
    # segments rows heads d -> (segments heads) rows d: a copy
    return x.permute(0, 2, 1, 3).reshape(-1, x.shape[1], d)


def sparse_to_dense(out, lse, r):
    """out [S, rows, H, D], lse [S, H, rows] -> [S, H, rows * r, D] and [S, H, rows * r, 1] through diag_embed."""
    s, length, heads, d = out.shape
    head_pad = pad_to(heads, r)
    if head_pad:
        out = F.pad(out, (0, 0, 0, head_pad))
        lse = F.pad(lse, (0, 0, 0, head_pad), value=-1e8)
    groups = (heads + head_pad) // r
    # length (r groups) d -> length groups d r, spread over an r x r diagonal
    out = out.view(s, length, r, groups, d).permute(0, 1, 3, 4, 2)
    out = torch.diag_embed(out, offset=0, dim1=4, dim2=5)
    # length groups d r1 r2 -> (r2 groups) (length r1) d: a copy
    out = out.permute(0, 5, 2, 1, 4, 3).reshape(s, r * groups, length * r, d)
    lse = lse.view(s, r, groups, length).permute(0, 3, 2, 1)
    lse = torch.diag_embed(lse, offset=0, dim1=3, dim2=4)
    lse = lse.masked_fill_(lse == 0, -1e8)
    lse = lse.permute(0, 4, 2, 1, 3).reshape(s, r * groups, length * r, 1)
    if head_pad:
        out, lse = out[:, :heads], lse[:, :heads]
    return out, lse


def scattering(outs, lses, dilations, n, b, heads):
    """The patterns' sparse outputs [S, rows, H, D] back to [B, N, H * D], mixed by their log-sum-exps."""
    dense_outs, dense_lses = [], []
    for r, o, lse in zip(dilations, outs, lses):
        s = o.shape[0]
        o, lse = sparse_to_dense(o, lse, r)
        g = o.shape[2]
        # (b segments) heads g d -> (b heads) (segments g) d: a copy each
        o = o.view(b, s // b, heads, g, -1).permute(0, 2, 1, 3, 4).reshape(b * heads, (s // b) * g, -1)
        lse = lse.view(b, s // b, heads, g, 1).permute(0, 2, 1, 3, 4).reshape(b * heads, (s // b) * g, 1)
        dense_outs.append(o[:, :n])
        dense_lses.append(lse[:, :n])
    with torch.no_grad():
        top = torch.stack(dense_lses, dim=0).max(0)[0]
        weights = [torch.exp(lse - top) for lse in dense_lses]
        total = torch.stack(weights, dim=0).sum(0)
        weights = [x / total for x in weights]
    out = 0
    for o, wt in zip(dense_outs, weights):
        out += o * wt.type_as(o)
    # (b heads) n d -> b n (heads d): a copy
    return out.view(b, heads, n, -1).permute(0, 2, 1, 3).reshape(b, n, -1)


def dilated_attention(q, k, v, segments, dilations, causal=True):
    b, n, heads, d = q.shape
    scale = d ** -0.5
    outs, lses = [], []
    for w, r in zip(segments, dilations):
        ki, vi, qi = gathering(k, w, r), gathering(v, w, r), gathering(q, w, r)
        length = qi.shape[1]
        # torchscale hands flash_attn_func [S, rows, heads, D] views of these tensors; the aten kernel takes
        # the same memory as [S, heads, rows, D]
        as_bhld = lambda x: x.view(-1, heads, length, d)  # noqa: E731
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention(
            as_bhld(qi), as_bhld(ki), as_bhld(vi), 0.0, causal, False, scale=scale)[:2]
        outs.append(out.transpose(1, 2))  # [S, rows, heads, D], as flash_attn_func returns it
        lses.append(lse[:, :, :length])
    return scattering(outs, lses, dilations, n, b, heads).view(b, n, heads, d)


def main():
    args = parse_args(__doc__)
    info({"peer": "torchscale_dilated"})
    torch.manual_seed(args.seed)
    check("torchscale", dilated_attention, "blocked", emit)
    h, d, bsz = args.heads, args.dim, args.batch
    for w in args.segments:
        bad = [n for n in args.lengths if n > w and n % w]
        if bad:
            raise SystemExit(f"torchscale_dilated.py: lengths {bad} are not multiples of the segment length {w}")

    def measure(n):
        return measure_attention((bsz, n, h, d), lambda q, k, v: dilated_attention(q, k, v, args.segments, args.dilations), args)

    run_lengths("torchscale", args, measure)


if __name__ == "__main__":
    main()
