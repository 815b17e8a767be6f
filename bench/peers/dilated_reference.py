"""The definition of dilated attention (SPEC section 1), dense in float32, for the peers' self-checks."""
import torch


def head_offsets(heads, r, rule):
    """Offset of each head for dilation r: "paper" is h mod r; "blocked" is torchscale's, heads padded to a
    multiple of r and cut into r consecutive groups, group j reading offset j."""
    h = torch.arange(heads)
    if rule == "paper":
        return h % r
    per_group = -(-heads // r)
    return h // per_group


def reference(q, k, v, segments, dilations, rule="paper"):
    """Causal dense attention in float32 over the multiset mask (a key counted once per pattern reaching it)."""
    b, n, heads, d = q.shape
    pos = torch.arange(n, device=q.device)
    counts = torch.zeros(heads, n, n, device=q.device)
    for w, r in zip(segments, dilations):
        seg = min(w, n)
        same = (pos[:, None] // seg) == (pos[None, :] // seg)
        earlier = pos[None, :] <= pos[:, None]
        offset = (pos % seg) % r
        for h, o in enumerate(head_offsets(heads, r, rule).tolist()):
            sel = offset == o
            counts[h] += (same & earlier & sel[:, None] & sel[None, :]).float()
    s = torch.einsum("bqhd,bkhd->bhqk", q.float(), k.float()) * d ** -0.5 + torch.log(counts)[None]
    return torch.einsum("bhqk,bkhd->bqhd", torch.softmax(s, dim=-1), v.float())


def check(impl, attend, rule, emit):
    """attend(q, k, v, segments, dilations) against the definition on a small case (reported, for the harness)."""
    shape = (2, 384, 4, 64)
    q, k, v = (torch.randn(shape, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    segments, dilations = [64, 128, 384], [1, 2, 4]
    with torch.no_grad():
        got = attend(q, k, v, segments, dilations).float()
        want = reference(q, k, v, segments, dilations, rule)
    emit({"kind": "check", "impl": impl, "max_abs_err": (got - want).abs().max().item(), "max_abs": want.abs().max().item()})
