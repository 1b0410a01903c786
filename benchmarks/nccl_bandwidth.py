"""All-reduce time and bus bandwidth between the GPUs of one host (NCCL).

    python -m torch.distributed.run --standalone --nproc-per-node 2 benchmarks/nccl_bandwidth.py

Prints, for fp32 and bf16 tensors from 256 KiB to 256 MiB, the mean time of one
``all_reduce`` and the bus bandwidth ``2 (n-1)/n × bytes / time`` (nccl-tests'
definition). The gradient all-reduce of a DDP step moves the model's parameter
bytes once per optimizer step: compare its time with the step's.
"""

from __future__ import annotations

import os
import time

import torch
import torch.distributed as dist


def main() -> None:
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        for size in (2**18, 2**20, 2**22, 2**23, 2**24, 2**26, 2**28):
            x = torch.ones(size // x_bytes(dtype), dtype=dtype, device="cuda")
            for _ in range(5):
                dist.all_reduce(x)
            torch.cuda.synchronize()
            reps = 20
            t0 = time.perf_counter()
            for _ in range(reps):
                dist.all_reduce(x)
            torch.cuda.synchronize()
            ms = (time.perf_counter() - t0) / reps * 1e3
            bus = 2 * (world - 1) / world * size / (ms / 1e3) / 1e9
            rows.append((str(dtype).removeprefix("torch."), size, ms, bus))
    if rank == 0:
        print(f"all_reduce over {world} × {torch.cuda.get_device_name()}")
        print(f"{'dtype':>9} {'MiB':>8} {'ms':>9} {'bus GB/s':>9}")
        for dtype, size, ms, bus in rows:
            print(f"{dtype:>9} {size / 2**20:8.2f} {ms:9.3f} {bus:9.1f}")
    dist.destroy_process_group()


def x_bytes(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


if __name__ == "__main__":
    main()
