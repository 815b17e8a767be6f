"""Shared by the peers of bench/gpu-dilated-attention.ts: arguments, timing, memory, JSON lines.

Each peer prints one JSON object per line on stdout: first {"kind": "info", ...} (torch version, card),
then one {"kind": "result", "impl": ..., "N": ..., "status": "ok" | "oom" | "skipped" | "error", ...}
per implementation and sequence length. Times are milliseconds (median of the repeats, CUDA events),
peak_bytes is torch.cuda.max_memory_allocated() over one forward+backward, inputs and gradients included.
"""
import argparse
import gc
import json
import statistics
import sys
import time

import torch


def parse_args(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--lengths", required=True, help="sequence lengths, comma-separated, ascending")
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--segments", default="2048,4096,8192,16384,32768")
    p.add_argument("--dilations", default="1,2,4,6,12")
    p.add_argument("--min-repeats", type=int, default=3)
    p.add_argument("--max-repeats", type=int, default=10)
    p.add_argument("--budget-seconds", type=float, default=2.0, help="repeat until this much time is spent (after min-repeats)")
    p.add_argument("--max-seconds", type=float, default=8.0,
                   help="skip a length whose forward+backward, extrapolated from the previous one, would take longer")
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    a.lengths = [int(x) for x in a.lengths.split(",") if x]
    a.segments = [int(x) for x in a.segments.split(",") if x]
    a.dilations = [int(x) for x in a.dilations.split(",") if x]
    return a


def emit(obj):
    print(json.dumps(obj), flush=True)


def info(extra=None):
    d = {"kind": "info", "torch": torch.__version__, "device": torch.cuda.get_device_name(0),
         "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}
    if extra:
        d.update(extra)
    emit(d)


def time_ms(fn, args):
    """Median milliseconds of fn() after one warm-up: at least min_repeats runs, more while the budget lasts."""
    fn()
    torch.cuda.synchronize()
    times = []
    spent = 0.0
    while len(times) < args.min_repeats or (len(times) < args.max_repeats and spent < args.budget_seconds):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        t0 = time.perf_counter()
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        spent += time.perf_counter() - t0
        times.append(start.elapsed_time(end))
    return statistics.median(times), len(times)


def release():
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()


def is_oom(e):
    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return isinstance(e, oom) or "out of memory" in str(e).lower()


def run_lengths(impl, args, measure, timed="fwdbwd_ms", what="a forward+backward"):
    """measure(N) -> dict of results for one length. Stops at the first OOM; skips lengths whose `timed`
    result (`what` a run), extrapolated quadratically, would pass args.max_seconds."""
    last = None  # (N, fwd+bwd seconds)
    stopped = None
    for n in args.lengths:
        if stopped:
            emit({"kind": "result", "impl": impl, "N": n, "status": stopped})
            continue
        if last and last[1] * (n / last[0]) ** 2 > args.max_seconds:
            emit({"kind": "result", "impl": impl, "N": n, "status": "skipped",
                  "reason": f"about {last[1] * (n / last[0]) ** 2:.1f} s {what}"})
            stopped = "skipped"
            continue
        release()
        try:
            r = measure(n)
        except Exception as e:  # noqa: BLE001 - an OOM or a missing backend is a row of the table, not a crash
            if is_oom(e):
                release()
                emit({"kind": "result", "impl": impl, "N": n, "status": "oom"})
                stopped = "oom"
            else:
                emit({"kind": "result", "impl": impl, "N": n, "status": "error", "reason": (str(e).splitlines() or [repr(e)])[0][:200]})
                print(f"{impl} N={n}: {e}", file=sys.stderr)
                stopped = "skipped"
                try:
                    release()
                except Exception:  # noqa: BLE001 - a device fault leaves the context unusable; no later length runs
                    pass
            continue
        release()
        emit({"kind": "result", "impl": impl, "N": n, "status": "ok", **r})
        last = (n, r[timed] / 1e3)


def measure_attention(shape, attend, args):
    """Peak memory and times of `attend(q, k, v)` on fresh bf16 inputs of `shape`: forward alone (no
    autograd) and forward+backward. The peak is over one forward+backward that keeps its gradients, as a
    training step does."""
    import torch  # noqa: PLC0415 - only the GPU peers need it

    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    q, k, v = (torch.randn(shape, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    d_o = torch.randn(shape, device="cuda", dtype=torch.bfloat16)

    def fwd():
        with torch.no_grad():
            attend(q, k, v)

    def fwdbwd():
        attend(q, k, v).backward(d_o)
        q.grad = k.grad = v.grad = None

    out = attend(q, k, v)
    out.backward(d_o)
    del out
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    q.grad = k.grad = v.grad = None
    fwd_ms, _ = time_ms(fwd, args)
    fwdbwd_ms, repeats = time_ms(fwdbwd, args)
    return {"fwd_ms": fwd_ms, "fwdbwd_ms": fwdbwd_ms, "peak_bytes": peak, "repeats": repeats}
