"""Peer of bench/gpu-scaling.ts fig5 (the paper's Figure 5): the forward-only variant of dense_sdpa.py. Dense
causal attention through scaled_dot_product_attention restricted to the FlashAttention backend, bf16, layout
[B, H, N, D], no autograd. Lengths in ascending order; stops at the first out-of-memory, and skips the lengths
whose forward, extrapolated quadratically from the previous one, would take longer than --max-seconds.

    python3 bench/peers/dense_forward.py --lengths 8192,16384 [--max-seconds 2]
"""
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from common import info, parse_args, run_lengths, time_ms

IMPL = "dense-flash"


def main():
    args = parse_args(__doc__)
    info({"peer": "dense_forward"})
    torch.manual_seed(args.seed)
    h, d, bsz = args.heads, args.dim, args.batch

    def measure(n):
        q, k, v = (torch.randn((bsz, h, n, d), device="cuda", dtype=torch.bfloat16) for _ in range(3))

        def fwd():
            with torch.no_grad(), sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                F.scaled_dot_product_attention(q, k, v, is_causal=True)

        fwd_ms, repeats = time_ms(fwd, args)
        return {"fwd_ms": fwd_ms, "repeats": repeats}

    run_lengths(IMPL, args, measure, timed="fwd_ms", what="a forward")


if __name__ == "__main__":
    main()
