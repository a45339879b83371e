"""The baseline a competent user would write for Criteo's hash encoding: pyarrow's CSV reader -> hash -> Parquet.

``bench_prep.py`` times it beside ``dlrm-scale prep criteo --encoding hash`` as a second reference (TorchRec's
``tsv_to_npys``, the first, keeps the whole file in Python lists). The same numbers as ours: ``label`` int8,
``I1..I13`` ``log(max(x, 0) + 1)`` float32 (missing = 0), ``C1..C26`` ``int(hex or "0", 16) % max_ind_range`` int64,
snappy Parquet. What it leaves out is what a one-off script leaves out: validation of the fields, splits, shards
of a bounded size, a manifest, resumption.

The work per block of rows is pyarrow's multi-threaded CSV parse, vectorised compute for the dense columns, and
for each categorical column a dictionary encode so that the hex -> int conversion runs in Python once per distinct
value, not per row.

Example::

    python benchmarks/prep_pyarrow.py --input day_0 --out day_0.parquet --max-ind-range 40000000
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as csv
import pyarrow.parquet as pq

DENSE = [f"I{i}" for i in range(1, 14)]
SPARSE = [f"C{i}" for i in range(1, 27)]
SCHEMA = pa.schema([pa.field("label", pa.int8())] + [pa.field(name, pa.float32()) for name in DENSE]
                   + [pa.field(name, pa.int64()) for name in SPARSE])


def hashed(column: pa.ChunkedArray, max_ind_range: int) -> pa.Array:
    """Hex strings (null or "" = missing = 0) -> ``int(hex, 16) % max_ind_range`` as int64."""
    encoded = pc.dictionary_encode(pc.fill_null(column, "")).combine_chunks()
    ids = np.array([int(value or "0", 16) for value in encoded.dictionary.to_pylist()], dtype=np.int64)
    if max_ind_range > 0:
        ids %= max_ind_range
    return pa.array(ids[encoded.indices.to_numpy(zero_copy_only=False)])


def convert(table: pa.Table, max_ind_range: int) -> pa.Table:
    columns = [pc.cast(table["label"], pa.int8())]
    for name in DENSE:
        values = pc.max_element_wise(pc.fill_null(table[name], 0), 0)
        columns.append(pc.cast(pc.ln(pc.add(pc.cast(values, pa.float64()), 1.0)), pa.float32()))
    columns += [hashed(table[name], max_ind_range) for name in SPARSE]
    return pa.Table.from_arrays(columns, schema=SCHEMA)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input", type=Path, required=True, help="raw Criteo TSV (label, 13 ints, 26 hex)")
    parser.add_argument("--out", type=Path, required=True, help="the Parquet file to write")
    parser.add_argument("--max-ind-range", type=int, default=40_000_000, help="hash modulo (0: none)")
    parser.add_argument("--block-mb", type=int, default=64, help="CSV block size")
    args = parser.parse_args(argv)
    reader = csv.open_csv(
        args.input,
        read_options=csv.ReadOptions(column_names=["label", *DENSE, *SPARSE], block_size=args.block_mb << 20),
        parse_options=csv.ParseOptions(delimiter="\t", quote_char=False),
        convert_options=csv.ConvertOptions(column_types={"label": pa.int8(), **{n: pa.int64() for n in DENSE},
                                                         **{n: pa.string() for n in SPARSE}}))
    rows = 0
    with pq.ParquetWriter(args.out, SCHEMA, compression="snappy") as writer:
        for batch in reader:
            table = convert(pa.Table.from_batches([batch]), args.max_ind_range)
            writer.write_table(table)
            rows += table.num_rows
    print(f"wrote {rows} rows to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
