"""Peer of bench/gpu-dilated-attention.ts: dilated attention computed the way torchscale computes it.

For each pattern (w, r): cut the sequence into segments of w' = min(w, N), select in every segment the rows
whose offset is h mod r for head h (the segment padded to a multiple of r), run PyTorch's FlashAttention
kernel (aten._scaled_dot_product_flash_attention, which also returns the log-sum-exp) on the selected rows
of every (segment, head), scatter the outputs and log-sum-exps back to the dense [B, N, H, ...] layout, and
mix the patterns with weights softmax_i(lse_i), computed without gradient as torchscale does.
Input layout [B, N, H, D] in bf16, causal.

    python3 bench/peers/torchscale_dilated.py --lengths 32768,65536
"""
import torch

from common import emit, info, measure_attention, parse_args, run_lengths


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


def reference(q, k, v, segments, dilations):
    """Causal dense attention in float32 over the multiset mask (a key counted once per pattern reaching it)."""
    b, n, heads, d = q.shape
    pos = torch.arange(n, device=q.device)
    counts = torch.zeros(heads, n, n, device=q.device)
    for w, r in zip(segments, dilations):
        seg = min(w, n)
        same = (pos[:, None] // seg) == (pos[None, :] // seg)
        earlier = pos[None, :] <= pos[:, None]
        offset = (pos % seg) % r
        for h in range(heads):
            sel = offset == h % r
            counts[h] += (same & earlier & sel[:, None] & sel[None, :]).float()
    s = torch.einsum("bqhd,bkhd->bhqk", q.float(), k.float()) * d ** -0.5 + torch.log(counts)[None]
    return torch.einsum("bhqk,bkhd->bqhd", torch.softmax(s, dim=-1), v.float())


def check():
    """The algorithm above against the definition on a small case (reported, for the harness to show)."""
    shape = (2, 384, 4, 64)
    q, k, v = (torch.randn(shape, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    segments, dilations = [64, 128, 384], [1, 2, 4]
    with torch.no_grad():
        got = dilated_attention(q, k, v, segments, dilations).float()
        want = reference(q, k, v, segments, dilations)
    emit({"kind": "check", "impl": "torchscale", "max_abs_err": (got - want).abs().max().item(),
          "max_abs": want.abs().max().item()})


def main():
    args = parse_args(__doc__)
    info({"peer": "torchscale_dilated"})
    torch.manual_seed(args.seed)
    check()
    h, d, bsz = args.heads, args.dim, args.batch

    def measure(n):
        return measure_attention((bsz, n, h, d), lambda q, k, v: dilated_attention(q, k, v, args.segments, args.dilations), args)

    run_lengths("torchscale", args, measure)


if __name__ == "__main__":
    main()
