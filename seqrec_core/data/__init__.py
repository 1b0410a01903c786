"""Data core: interaction tables, id maps, filters, splits and sequence tensors.

Every dataset plugin returns a :class:`RawData` (an interaction table in file
order plus optional metadata); everything after that — rating threshold,
iterative k-core, id remapping, chronological ordering, leave-one-out split,
CSR sequences and the on-disk cache — happens here, identically for all
datasets.
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
from seqrec_core.data.pipeline import load_dataset

__all__ = [
    "DatasetSource",
    "IdMap",
    "RawData",
    "SequenceData",
    "build_sequences",
    "filter_interactions",
    "kcore",
    "load_dataset",
]
