"""Data core: interaction tables, id maps, filters, splits and sequence tensors.

Every dataset plugin returns a :class:`RawData` (an interaction table in file
order plus optional metadata); everything after that — rating threshold,
iterative k-core, id remapping, chronological ordering, applying the split
(a split plugin; leave-one-out by default), CSR sequences and the on-disk
cache — happens here, identically for all datasets. ``download`` fetches and installs official
archives; ``info`` summarises a dataset (``seqrec data info``).
"""

from seqrec_core.data.core import (
    DatasetSource,
    IdMap,
    RawData,
    SequenceData,
    build_sequences,
    filter_interactions,
    kcore,
)
from seqrec_core.data.pipeline import apply_split, load_dataset
from seqrec_core.data.splits import SplitArrays

__all__ = [
    "DatasetSource",
    "IdMap",
    "RawData",
    "SequenceData",
    "SplitArrays",
    "apply_split",
    "build_sequences",
    "filter_interactions",
    "kcore",
    "load_dataset",
]
