"""History → top-K recommendations (ids, titles, scores, probabilities).

Used by ``seqrec run`` (sample users after training), ``seqrec recommend`` and
the TUI. Works from a checkpoint alone: titles and the item id map are in its
metadata, user histories in ``histories.safetensors`` beside it.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.table import Table

from seqrec_core import checkpoint as ckpt_io
from seqrec_core.errors import SeqrecError


@dataclass
class Recommendation:
    rank: int
    item: int  # internal id
    raw_id: Any
    title: str
    score: float
    probability: float


class Catalogue:
    """Item ids ↔ titles of a trained model (from checkpoint metadata)."""

    def __init__(self, item_ids: Sequence[Any], titles: Sequence[str]):
        self.raw = list(item_ids)
        self.titles = ["<pad>", *titles]
        self._by_raw = {str(r): i + 1 for i, r in enumerate(self.raw)}
        # A title can belong to several items (MovieLens lists a few films twice).
        self._by_title: dict[str, list[int]] = {}
        for i, t in enumerate(self.titles):
            if i:
                self._by_title.setdefault(t.casefold(), []).append(i)

    @classmethod
    def from_checkpoint(cls, ckpt: ckpt_io.Checkpoint) -> Catalogue:
        ds = ckpt.meta["dataset"]
        return cls(ds["item_ids"], ds["titles"])

    @property
    def n_items(self) -> int:
        return len(self.raw)

    def resolve(self, token: str | int) -> int:
        """A title (exact, case-insensitive) or raw item id → internal id."""
        text = str(token).strip()
        ids = self._by_title.get(text.casefold())
        if ids and len(ids) == 1:
            return ids[0]
        if ids:
            raws = ", ".join(str(self.raw[i - 1]) for i in ids)
            raise SeqrecError(
                f"title {text!r} belongs to {len(ids)} items (ids {raws}); give the item id instead"
            )
        if text in self._by_raw:
            return self._by_raw[text]
        close = difflib.get_close_matches(text, self.titles[1:], n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise SeqrecError(f"unknown item {text!r}: not a title or item id of this model{hint}")

    def search(self, query: str, limit: int = 10) -> list[tuple[int, str]]:
        """Fuzzy title search: substring matches first, then close matches."""
        q = query.casefold().strip()
        if not q:
            return []
        hits = [(i, t) for i, t in enumerate(self.titles) if i and q in t.casefold()]
        if len(hits) < limit:
            for t in difflib.get_close_matches(query, self.titles[1:], n=limit, cutoff=0.4):
                for i in self._by_title[t.casefold()]:
                    if (i, t) not in hits:
                        hits.append((i, t))
        return hits[:limit]


def top_k(
    model: Any,
    history: Sequence[int],
    k: int = 10,
    exclude_seen: bool = False,
    catalogue: Catalogue | None = None,
    device: torch.device | str = "cpu",
) -> list[Recommendation]:
    """Top-``k`` next items for one history of internal ids (oldest first)."""
    seq = list(history)[-(model.max_len or len(history) or 1) :] or [0]
    seqs = torch.tensor([seq], dtype=torch.long, device=device)
    with torch.no_grad():
        scores = model.predict(seqs)[0].float().cpu()
    scores[0] = -torch.inf
    probs = torch.softmax(scores, dim=0)
    if exclude_seen and len(history):
        scores[torch.tensor(sorted(set(history)), dtype=torch.long)] = -torch.inf
    k = min(k, int(torch.isfinite(scores).sum()))
    values, idx = scores.topk(k)
    out = []
    for r, (s, i) in enumerate(zip(values.tolist(), idx.tolist(), strict=True), start=1):
        title = catalogue.titles[i] if catalogue else f"item {i}"
        raw = catalogue.raw[i - 1] if catalogue else i
        out.append(Recommendation(r, i, raw, title, s, float(probs[i])))
    return out


class Histories:
    """Users' full sequences as saved beside a checkpoint."""

    def __init__(self, path: Path):
        hist = ckpt_io.load_checkpoint(path)
        self.offsets = hist.tensors["offsets"].numpy()
        self.items = hist.tensors["items"].numpy().astype(np.int64)
        ids = hist.tensors.get("user_ids")
        self.user_ids = ids.tolist() if ids is not None else hist.meta["user_ids"]
        self._row = {str(u): i for i, u in enumerate(self.user_ids)}
        self.digest = hist.meta.get("item_map_digest")

    def of(self, user: Any) -> list[int]:
        row = self._row.get(str(user))
        if row is None:
            sample = ", ".join(str(u) for u in self.user_ids[:5])
            raise SeqrecError(f"unknown user {user!r}; user ids look like: {sample}, …")
        return self.items[self.offsets[row] : self.offsets[row + 1]].tolist()


def load_for_inference(path: str | Path, registry: Any):
    """``(model, catalogue, histories-or-None, checkpoint)`` from a checkpoint file."""
    ckpt = ckpt_io.load_checkpoint(path)
    if ckpt.meta.get("kind") not in ("best", "last"):
        raise SeqrecError(f"{path}: a seqrec {ckpt.meta.get('kind')} file, not a model checkpoint")
    model = ckpt_io.build_model(ckpt, registry)
    catalogue = Catalogue.from_checkpoint(ckpt)
    hist_path = Path(path).parent / "histories.safetensors"
    histories = Histories(hist_path) if hist_path.is_file() else None
    if histories is not None and histories.digest != ckpt.meta["dataset"]["item_map_digest"]:
        histories = None  # belongs to another dataset; never mix catalogues
    return model, catalogue, histories, ckpt


def recommendation_table(
    recs: list[Recommendation],
    history: Sequence[int],
    catalogue: Catalogue,
    title: str,
    last: int = 5,
) -> Table:
    table = Table(title=title, caption=_history_caption(history, catalogue, last))
    for col, just in (("rank", "right"), ("title", "left"), ("score", "right"), ("prob.", "right")):
        table.add_column(col, justify=just)
    for r in recs:
        table.add_row(str(r.rank), r.title, f"{r.score:.3f}", f"{r.probability:.4f}")
    return table


def _history_caption(history: Sequence[int], catalogue: Catalogue, last: int) -> str:
    recent = [catalogue.titles[i] for i in list(history)[::-1][:last]]
    more = f" (+{len(history) - last} earlier)" if len(history) > last else ""
    return "last watched: " + ("; ".join(recent) if recent else "nothing") + more
