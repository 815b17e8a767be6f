"""Peer of bench/gpu-dilated-attention.ts: dense causal attention, torch.nn.functional.scaled_dot_product_attention
restricted to one backend at a time: FlashAttention ("dense-flash") and cuDNN ("dense-cudnn").
Layout [B, H, N, D] in bf16 (SDPA's own). A backend PyTorch cannot use here is reported as an error row.

    python3 bench/peers/dense_sdpa.py --lengths 32768,65536 [--backends flash,cudnn]
"""
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from common import info, measure_attention, parse_args, run_lengths

BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}


def main():
    wanted = ["flash", "cudnn"]
    if "--backends" in sys.argv:
        i = sys.argv.index("--backends")
        wanted = [b for b in sys.argv[i + 1].split(",") if b]
        del sys.argv[i:i + 2]
    args = parse_args(__doc__)
    info({"peer": "dense_sdpa"})
    torch.manual_seed(args.seed)
    h, d, bsz = args.heads, args.dim, args.batch

    for name in wanted:
        backend = BACKENDS[name]

        def measure(n, backend=backend):
            def attend(q, k, v):
                with sdpa_kernel([backend]):
                    return F.scaled_dot_product_attention(q, k, v, is_causal=True)

            return measure_attention((bsz, h, n, d), attend, args)

        run_lengths(f"dense-{name}", args, measure)


if __name__ == "__main__":
    main()
