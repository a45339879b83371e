"""Column names of the raw Criteo layout and of the Parquet shards (the manifest's contract).

Raw line: ``label, I1..I13, C1..C26`` (40 fields; 39 without ``label`` as in Kaggle's ``test.txt``).
Shard columns: ``label`` int8 (-1 for rows of an unlabeled file), ``I1..I13`` float32 after the dense transform,
``C1..C26`` int64 ids in ``[0, cardinality)``. No column holds nulls.
"""

from __future__ import annotations

import pyarrow as pa

from dlrm_scale.config import NUM_DENSE, NUM_SPARSE, dense_feature_names, sparse_feature_names

LABEL = "label"
ID = "Id"  # the Kaggle competition CSVs' row id: read past, never written
DENSE = dense_feature_names(NUM_DENSE)
SPARSE = sparse_feature_names(NUM_SPARSE)
RAW_LABELED = (LABEL, *DENSE, *SPARSE)
RAW_UNLABELED = (*DENSE, *SPARSE)
UNLABELED = -1  # label written for rows of a file without a label column (TorchRec's convention for test.txt)
HASH_SPACE = 2**32  # Criteo's categorical values are 32-bit hashes: ids without --max-ind-range are below this

OUTPUT_SCHEMA = pa.schema(
    [pa.field(LABEL, pa.int8(), nullable=False)]
    + [pa.field(name, pa.float32(), nullable=False) for name in DENSE]
    + [pa.field(name, pa.int64(), nullable=False) for name in SPARSE]
)
