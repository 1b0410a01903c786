"""Which mLSTM Triton kernels train safely at which head sizes (GPU).

The RQ2 sweep's xLSTM cells with dim 128 (2 heads: q/k head 32, v head 64) died with
"illegal memory access" in ``triton_xl_chunk``'s dK backward kernel in most runs, and
those with dim 256 (q/k 64, v 128) with an LLVM assertion while Triton compiled a
kernel; dim 64 (16/32) never failed. This script runs forward+backward of
``mlstm_kernels``' training kernels (the TFLA chunkwise ones, the parallel Triton one
and a native chunkwise one, for speed) at the shapes of seqrec's xLSTM on ML-1M
(batch 128, 2 heads, sequence 256 = max_len 200 padded), repeatedly, each case in its own process (either fault ends
the process that hits it), compares the first step with the native PyTorch kernel,
and prints one table:

    python benchmarks/xlstm_kernel_check.py                      # all cases
    python benchmarks/xlstm_kernel_check.py --steps 50 --kernels chunkwise--triton_xl_chunk --lengths 64 256
    python benchmarks/xlstm_kernel_check.py --variants '{}' '{"num_warps_intra": 2}'

Columns: kernel, launch settings (``--variants``, for ``triton_xl_chunk``: what the
xLSTM option ``model.triton_args`` passes), head sizes, sequence length, chunk size, result (ok / the exit code
or signal and the error's last line), the largest relative error of h, dq, dk, dv
against ``chunkwise--native_autograd`` (bf16 inputs, fp32 reference), and ms per
forward+backward.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

HEADS = [(16, 32), (32, 64), (64, 128)]  # (q/k, v) head sizes of dim 64 / 128 / 256, 2 heads


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--kernels",
        nargs="+",
        default=[
            "chunkwise--triton_xl_chunk",
            "chunkwise--triton_limit_chunk",
            "parallel--triton_limit_headdim",
            "chunkwise--native_custbw",
        ],
    )
    p.add_argument("--lengths", nargs="+", type=int, default=[256])
    p.add_argument("--chunks", nargs="+", type=int, default=[64])
    p.add_argument(
        "--variants",
        nargs="+",
        default=[
            "{}",
            '{"num_warps_intra": 2}',
            '{"siz_b_DH_parallel": 32, "siz_b_DH_loop": 32}',
        ],
        help="JSON launch settings for triton_xl_chunk (the xLSTM option model.triton_args)",
    )
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--steps", type=int, default=30, help="forward+backward repeats per case")
    p.add_argument("--timeout", type=int, default=300, help="seconds per case")
    p.add_argument(
        "--json", default=None, help="also write the rows to this file (after each case)"
    )
    p.add_argument(
        "--parallel",
        type=int,
        default=1,
        help="first run every case N at a time (compiles the kernels into Triton's cache and "
        "finds the crashes), then time the cases that passed one at a time",
    )
    p.add_argument("--case", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def run_case(case: dict) -> dict:
    """One case, in this process: errors against native, then timed repeats."""
    from functools import partial

    import torch
    from mlstm_kernels.torch import get_mlstm_kernel

    dev = "cuda"
    b, nh, s, dqk, dv = case["batch"], case["heads"], case["length"], case["dqk"], case["dv"]
    g = torch.Generator(device=dev).manual_seed(0)

    def inputs(dtype):
        q = torch.randn(b, nh, s, dqk, device=dev, generator=g)
        k = torch.randn(b, nh, s, dqk, device=dev, generator=g)
        v = torch.randn(b, nh, s, dv, device=dev, generator=g)
        i = torch.randn(b, nh, s, device=dev, generator=g)
        f = 3.0 + torch.randn(b, nh, s, device=dev, generator=g)
        return [t.to(dtype).requires_grad_() for t in (q, k, v, i, f)]

    def step(fn, ts):
        h = fn(*ts, chunk_size=case["chunk"], return_last_states=False)
        weight = torch.linspace(-1, 1, h.shape[-1], device=dev, dtype=h.dtype)
        (h * weight).float().sum().backward()
        return h.detach().float(), [t.grad.float() for t in ts[:3]]

    g.manual_seed(0)
    ref_in = inputs(torch.float32)
    g.manual_seed(0)
    tri_in = inputs(torch.bfloat16)
    h_ref, grads_ref = step(get_mlstm_kernel("chunkwise--native_autograd"), ref_in)
    fn = partial(get_mlstm_kernel(case["kernel"]), **case["args"])
    h, grads = step(fn, tri_in)
    torch.cuda.synchronize()

    def rel(a, r):
        return float((a - r).abs().max() / r.abs().max().clamp_min(1e-12))

    errors = [rel(h, h_ref)] + [rel(x, y) for x, y in zip(grads, grads_ref, strict=True)]
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(case["steps"]):
        for t in tri_in:
            t.grad = None
        step(fn, tri_in)
    end.record()
    torch.cuda.synchronize()
    return {"errors": errors, "ms": start.elapsed_time(end) / case["steps"]}


def launch(case: dict, timeout: int) -> dict:
    cmd = [sys.executable, __file__, "--case", json.dumps(case)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**case, "result": f"timeout {timeout}s"}
    if proc.returncode == 0:
        line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
        return {**case, "result": "ok", **json.loads(line[len("RESULT ") :])}
    code = proc.returncode
    how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit {code}"
    last = [x for x in proc.stderr.strip().splitlines() if x.strip()][-1:] or [""]
    return {**case, "result": f"{how}: {last[0][:120]}"}


def main(argv=None) -> int:
    args = parse(argv)
    if args.case:
        print("RESULT " + json.dumps(run_case(json.loads(args.case))), flush=True)
        return 0
    rows = []
    header = (
        "| kernel | args | q/k, v head | length | chunk | result | h | dq | dk | dv | ms/step |"
    )
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    cases = []
    for kernel in args.kernels:
        variants = args.variants if kernel.endswith("triton_xl_chunk") else ["{}"]
        for variant in variants:
            for dqk, dv in HEADS:
                for length in args.lengths:
                    for chunk in args.chunks:
                        cases.append(
                            {
                                "kernel": kernel,
                                "args": json.loads(variant),
                                "dqk": dqk,
                                "dv": dv,
                                "length": length,
                                "chunk": chunk,
                                "batch": args.batch,
                                "heads": args.heads,
                                "steps": args.steps,
                            }
                        )
    first = {}
    if args.parallel > 1:
        # Shared-GPU times are not speeds: this pass only compiles and checks.
        with ThreadPoolExecutor(args.parallel) as pool:
            for i, row in enumerate(pool.map(lambda c: launch(c, args.timeout), cases)):
                first[i] = row
    for i, case in enumerate(cases):
        row = first.get(i)
        if row is None or row["result"] == "ok":
            row = launch(case, args.timeout)
        rows.append(row)
        if args.json:  # after every case: a run cut short keeps what it measured
            with open(args.json, "w", encoding="utf-8") as fh:
                json.dump(rows, fh, indent=2)
        errs = row.get("errors") or [float("nan")] * 4
        ms = row.get("ms", float("nan"))
        print(
            f"| {case['kernel']} | {json.dumps(case['args'])} | {case['dqk']}, {case['dv']} | "
            f"{case['length']} | {case['chunk']} | {row['result']} | "
            + " | ".join(f"{e:.1e}" for e in errs)
            + f" | {ms:.2f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
