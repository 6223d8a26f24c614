"""The embedding cache: one SQLite file, keyed by file content hash +
encoder id + preprocessing digest.

SQLite in WAL mode with a busy timeout lets several processes read and write
at once without corrupting the file; every batch is committed as soon as it
is computed, so a run killed at any point (even with SIGKILL) keeps all the
batches it finished and a re-run computes only what is missing.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from pathlib import Path

import numpy as np

_SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    content_hash TEXT NOT NULL,
    encoder_key  TEXT NOT NULL,
    dim          INTEGER NOT NULL,
    vector       BLOB NOT NULL,
    created      REAL NOT NULL,
    PRIMARY KEY (content_hash, encoder_key)
) WITHOUT ROWID;
"""


def default_cache_path() -> Path:
    """``$PHOTOCRITIC_CACHE`` if set, else the user's cache directory."""
    env = os.environ.get("PHOTOCRITIC_CACHE")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("photocritic")) / "embeddings.sqlite"


def content_hash(data: bytes) -> str:
    """BLAKE2b-128 of a file's bytes: the content part of the cache key."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def hash_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


class CacheError(RuntimeError):
    """The cache file cannot be opened or is not a photocritic cache."""


class EmbeddingCache:
    """Float32 vectors by (content hash, encoder key)."""

    def __init__(self, path: str | os.PathLike, timeout: float = 60.0):
        self.path = Path(path).expanduser()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(str(self.path), timeout=timeout, isolation_level=None,
                                         check_same_thread=False)
            self._conn.execute("PRAGMA busy_timeout = %d" % int(timeout * 1000))
            self._retry(lambda: self._conn.execute("PRAGMA journal_mode = WAL"))
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._retry(lambda: self._conn.executescript(_SCHEMA))
        except (OSError, sqlite3.DatabaseError) as exc:
            raise CacheError(f"cannot use {self.path} as the embedding cache ({exc}); "
                             f"pass another file with --cache PATH, or --no-cache") from None

    def _retry(self, fn, attempts: int = 50):
        for i in range(attempts):
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc) or i == attempts - 1:
                    raise
                time.sleep(0.05 * (i + 1))

    def get_many(self, hashes: list[str], encoder_key: str) -> dict[str, np.ndarray]:
        """The cached vectors among ``hashes`` (missing ones are absent)."""
        out: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(hashes))
        for start in range(0, len(unique), 500):
            chunk = unique[start:start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._retry(lambda: self._conn.execute(
                f"SELECT content_hash, dim, vector FROM embeddings "
                f"WHERE encoder_key = ? AND content_hash IN ({marks})",
                [encoder_key, *chunk]).fetchall())
            for h, dim, blob in rows:
                vec = np.frombuffer(blob, dtype=np.float32)
                if vec.size == dim:
                    out[h] = vec
        return out

    def put_many(self, items: list[tuple[str, np.ndarray]], encoder_key: str) -> None:
        """Store vectors in one transaction (committed before returning)."""
        now = time.time()
        rows = [(h, encoder_key, int(v.size), np.ascontiguousarray(v, dtype=np.float32).tobytes(), now)
                for h, v in items]

        def write():
            with self._conn:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.executemany(
                    "INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?, ?)", rows)

        self._retry(write)

    def __len__(self) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]

    def close(self) -> None:
        self._conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
