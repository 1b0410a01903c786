"""How far apart are xLSTM's computation paths? (GPU)

    python benchmarks/xlstm_numerics.py

On one set of weights, scores for the next item after a 120-item history are
computed by: full recompute with native kernels in fp32 (the reference), full
recompute with the Triton TFLA kernels in fp32 and under bf16 autocast, and
streaming (``init_state`` on 60 items + 60 ``step`` calls) with each step
kernel, in fp32 and under bf16 autocast, and the training path (gradients on,
bf16). Inference (no gradients) runs in fp32 even under autocast. The table prints the largest
difference relative to the largest reference score, and the top-10 overlap.
"""

from __future__ import annotations

import torch
from rich.console import Console
from rich.table import Table

import seqrec_xlstm as X


def main() -> None:
    torch.manual_seed(0)
    dev = torch.device("cuda")
    base = dict(max_len=256, dim=64, blocks=2, heads=2, chunk_size=64, dropout=0.0)
    ref_model = X.XLSTM(X.XLSTMOptions(**base, kernel="native"), 500).to(dev).eval()
    tri_model = X.XLSTM(X.XLSTMOptions(**base, kernel="triton"), 500).to(dev).eval()
    tri_model.load_state_dict(ref_model.state_dict())
    hist = torch.randint(1, 501, (120,)).tolist()
    seq = torch.tensor([hist], device=dev)

    def full(model, bf16):
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            return model.predict(seq)[0].float()

    def stream(model, bf16):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            state = model.init_state(torch.tensor(hist[:60]))
            for item in hist[60:]:
                state, scores = model.step(state, item)
        return scores.float()

    def training_path(model):
        # With gradients enabled the model keeps bf16 (as in training).
        with torch.autocast("cuda", dtype=torch.bfloat16):
            scores = model.score(model.encode(seq)[:, -1]).float()[0].detach()
        scores[0] = -torch.inf
        return scores

    ref = full(ref_model, False)
    rows = {
        "recompute triton fp32": full(tri_model, False),
        "recompute triton bf16": full(tri_model, True),
        "recompute native bf16": full(ref_model, True),
        "training path triton bf16": training_path(tri_model),
        "stream triton fp32": stream(tri_model, False),
        "stream triton bf16": stream(tri_model, True),
        "stream native fp32": stream(ref_model, False),
        "stream native bf16": stream(ref_model, True),
    }
    scale = ref[1:].abs().max()
    top = set(ref.topk(10).indices.tolist())
    table = Table(title=f"xLSTM paths vs native fp32 recompute ({torch.cuda.get_device_name()})")
    for c in ("path", "max |diff| / max |score|", "top-10 overlap", "vs recompute same dtype"):
        table.add_column(c, justify="right")
    for name, s in rows.items():
        same = rows["recompute triton bf16" if "bf16" in name else "recompute triton fp32"]
        rel_same = ((s - same)[1:].abs().max() / same[1:].abs().max()).item()
        table.add_row(
            name,
            f"{((s - ref)[1:].abs().max() / scale).item():.2e}",
            f"{len(top & set(s.topk(10).indices.tolist()))}/10",
            f"{rel_same:.2e}",
        )
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
