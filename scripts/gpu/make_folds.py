"""Leave-one-book-out folds from the carried real shards: per fold, train = other books, val = 5% of them."""

import random
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

real, out = Path(sys.argv[1]), Path(sys.argv[2])
books = sorted(p.stem for p in real.glob("*.parquet"))
for fold in [*books, "ALL"]:
    tables = [pq.read_table(real / f"{b}.parquet") for b in books if b != fold]
    table = pa.concat_tables(tables)
    rng = random.Random(0)
    val = set(rng.sample(range(table.num_rows), table.num_rows // 20))
    d = out / fold
    d.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.take([i for i in range(table.num_rows) if i not in val]), d / "train_real.parquet")
    pq.write_table(table.take(sorted(val)), d / "val_real.parquet")
    print(fold, table.num_rows - len(val), len(val))
