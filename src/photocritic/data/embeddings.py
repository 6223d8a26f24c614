"""Precomputed image embeddings, read in chunks (memory stays flat in N).

* ``.npy``: an (N, D) float array, memory-mapped; rows are keyed by their
  index;
* Parquet: one list/fixed-size-list column of floats (``embedding``,
  ``embeddings``, ``image_embedding``, ``clip_embedding`` or ``emb``, else
  the only such column) and an id column (``id``, ``key``, ``path``,
  ``image_path``, ``url``, ``image_id``; else the row index).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError

EMBEDDING_COLUMNS = ("embedding", "embeddings", "image_embedding", "clip_embedding", "emb")
ID_COLUMNS = ("id", "key", "path", "image_path", "url", "image_id")
CHUNK = 65536


def read_embeddings(path: str | Path, chunk: int = CHUNK):
    """Yields (ids, float32 array (n, D)) chunks."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"--embeddings {path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(path, mmap_mode="r")
        except ValueError as exc:
            raise DataError(f"--embeddings {path}: not a numpy array file ({exc})") from None
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.floating):
            raise DataError(f"--embeddings {path}: expected a 2-d float array (N, D), got shape "
                            f"{arr.shape} of {arr.dtype}")
        for s in range(0, len(arr), chunk):
            yield [str(i) for i in range(s, min(s + chunk, len(arr)))], np.array(arr[s:s + chunk], np.float32)
        return
    if suffix != ".parquet":
        raise DataError(f"--embeddings {path}: use a .npy or .parquet file")
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:
        raise DataError(f"--embeddings {path}: not a readable Parquet file ({exc})") from None
    schema = pf.schema_arrow
    lists = [f.name for f in schema if pa.types.is_list(f.type) or pa.types.is_fixed_size_list(f.type)
             or pa.types.is_large_list(f.type)]
    emb_col = next((c for c in EMBEDDING_COLUMNS if c in lists), lists[0] if len(lists) == 1 else None)
    if emb_col is None:
        raise DataError(f"--embeddings {path}: no embedding column (a list of floats named one of "
                        f"{', '.join(EMBEDDING_COLUMNS)}); list columns: {lists or 'none'}")
    id_col = next((c for c in ID_COLUMNS if c in schema.names), None)
    start = 0
    for batch in pf.iter_batches(batch_size=chunk, columns=[emb_col] + ([id_col] if id_col else [])):
        col = batch.column(emb_col)
        if col.null_count:
            raise DataError(f"--embeddings {path}: {col.null_count} rows have no embedding")
        arr = np.asarray(col.flatten().to_numpy(zero_copy_only=False), np.float32)
        n = len(batch)
        if n and arr.size % n:
            raise DataError(f"--embeddings {path}: embeddings of different lengths")
        arr = arr.reshape(n, -1)
        ids = ([str(v) for v in batch.column(id_col).to_pylist()] if id_col
               else [str(i) for i in range(start, start + n)])
        start += n
        yield ids, arr
