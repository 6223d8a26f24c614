"""The embedding cache: one SQLite file, keyed by file content hash +
encoder id + preprocessing digest.

SQLite in WAL mode with a busy timeout lets several processes read and write
at once without corrupting the file; every batch is committed as soon as it
is computed, so a run killed at any point (even with SIGKILL) keeps all the
batches it finished and a re-run computes only what is missing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import time
from pathlib import Path

import numpy as np

from .errors import PhotocriticError

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
_META = """
CREATE TABLE IF NOT EXISTS photocritic_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO photocritic_meta VALUES ('format', 'photocritic-embedding-cache');
INSERT OR IGNORE INTO photocritic_meta VALUES ('version', '1');
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


def gather(cache, key: str, hashes: list[str], path: str | os.PathLike | None, chunk: int = 4096) -> np.ndarray:
    """The stored features of ``hashes``, in order, as one (N, ...) float32
    array: a memory-mapped ``.npy`` at ``path`` (filled chunk by chunk, so
    memory stays flat in N), or in RAM when ``path`` is None."""
    if not hashes:
        return np.zeros((0, 0), np.float32)
    first = cache.get_many(hashes[:1], key)[hashes[0]]
    shape = (len(hashes), *first.shape)
    out = (np.zeros(shape, np.float32) if path is None
           else np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape))
    for s in range(0, len(hashes), chunk):
        part = hashes[s:s + chunk]
        got = cache.get_many(part, key)
        out[s:s + len(part)] = np.stack([got[h] for h in part])
    if path is not None:
        out.flush()
    return out


def retry_busy(fn, attempts: int = 50):
    """``fn()``, retried with a growing pause (about a minute in all) while
    SQLite answers "locked" or "busy", which some statements (the switch to
    WAL among them) return at once instead of waiting on the busy timeout."""
    for i in range(attempts):
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc) or i == attempts - 1:
                raise
            time.sleep(0.05 * (i + 1))


def select_by_hash(conn, sql: str, key: str, hashes: list[str], guard=None, chunk: int = 500):
    """Yields the rows of ``sql AND content_hash IN (...)`` for the distinct
    ``hashes``, 500 at a time (SQLite's parameter limit)."""
    unique = list(dict.fromkeys(hashes))
    for start in range(0, len(unique), chunk):
        part = unique[start:start + chunk]
        query = f"{sql} AND content_hash IN ({','.join('?' * len(part))})"
        run = lambda: conn.execute(query, [key, *part]).fetchall()  # noqa: E731
        yield guard(run) if guard else run()


class CacheError(PhotocriticError, RuntimeError):
    """The cache file cannot be opened, is damaged, or is not a photocritic cache.

    ``kind``: ``damaged`` (SQLite reports damage, or the file is not SQLite
    at all: --cache-rebuild moves it aside), ``foreign`` (another program's
    SQLite database: never touched) or ``unusable`` (permissions, a folder)."""

    def __init__(self, message: str, kind: str = "unusable"):
        super().__init__(message)
        self.kind = kind


_SQLITE_MAGIC = b"SQLite format 3\x00"
_OUR_TABLES = {"embeddings", "photocritic_meta"}
_FIX = "run again with --cache-rebuild (moves it aside, deletes nothing) or --no-cache"


def _side_files(path: Path) -> list[Path]:
    return [path.with_name(path.name + suffix) for suffix in ("-wal", "-shm", "-journal")]


def move_aside(path: str | os.PathLike) -> Path | None:
    """Rename a cache file (and its -wal/-shm files) to ``<name>.damaged-<time>``;
    nothing is deleted. Returns the new name, or None when there was no file."""
    path = Path(path).expanduser()
    if not path.exists():
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    k = 1
    while target.exists():
        k += 1
        target = path.with_name(f"{path.name}.damaged-{stamp}-{k}")
    os.replace(path, target)
    for side in _side_files(path):
        if side.exists():
            os.replace(side, target.with_name(target.name + side.name[len(path.name):]))
    return target


class EmbeddingCache:
    """Float32 vectors by (content hash, encoder key).

    ``path=None`` keeps the cache in memory only: nothing is written to disk
    (what ``--no-cache`` uses where a command needs embeddings back).

    A file that is not SQLite, an SQLite database of another program, or a
    damaged one raises :class:`CacheError` naming the file, at open or at
    the first query that meets the damage; nothing is ever written to a
    foreign database.
    """

    def __init__(self, path: str | os.PathLike | None, timeout: float = 60.0):
        self.path = None if path is None else Path(path).expanduser()
        try:
            if self.path is None:
                self._conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
                self._conn.executescript(_SCHEMA)
                return
            self._check_header()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(str(self.path), timeout=timeout, isolation_level=None,
                                         check_same_thread=False)
            self._conn.execute("PRAGMA busy_timeout = %d" % int(timeout * 1000))
            self._check_tables()
            retry_busy(lambda: self._conn.execute("PRAGMA journal_mode = WAL"))
            self._conn.execute("PRAGMA synchronous = NORMAL")
            retry_busy(lambda: self._conn.executescript(_SCHEMA + _META))
        except CacheError:
            raise
        except sqlite3.DatabaseError as exc:
            raise self._damaged(exc) from None
        except OSError as exc:
            raise CacheError(f"cannot use {self.path} as the embedding cache "
                             f"({exc.strerror or exc}); pass another file with --cache PATH, "
                             f"or --no-cache") from None

    def _check_header(self) -> None:
        if self.path.is_file() and self.path.stat().st_size > 0:
            with open(self.path, "rb") as fh:
                head = fh.read(len(_SQLITE_MAGIC))
            if head != _SQLITE_MAGIC:
                raise CacheError(f"{self.path} is not an embedding cache (not an SQLite database); "
                                 f"{_FIX}, or pass another file with --cache PATH", "damaged")
        elif self.path.is_dir():
            raise CacheError(f"{self.path} is a directory, not an embedding cache file; "
                             f"pass a file with --cache PATH")

    def _check_tables(self) -> None:
        names = {r[0] for r in self._conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()}
        if names and not names <= _OUR_TABLES:
            raise CacheError(f"{self.path} is an SQLite database of another program (tables: "
                             f"{', '.join(sorted(names)[:5])}), not a photocritic embedding cache; "
                             f"it was not changed. Pass another file with --cache PATH", "foreign")
        if "embeddings" in names:
            cols = [r[1] for r in self._conn.execute("PRAGMA table_info(embeddings)").fetchall()]
            if cols != ["content_hash", "encoder_key", "dim", "vector", "created"]:
                raise CacheError(f"{self.path}: its 'embeddings' table is not a photocritic cache's "
                                 f"(columns {cols}); it was not changed. Pass another file with --cache PATH",
                                 "foreign")

    def _damaged(self, exc: Exception) -> CacheError:
        return CacheError(f"the embedding cache {self.path} is damaged or unreadable ({exc}); {_FIX}",
                          "damaged")

    def check(self) -> None:
        """Read every page (``PRAGMA quick_check``); CacheError if damaged."""
        try:
            res = [r[0] for r in self._conn.execute("PRAGMA quick_check").fetchall()]
        except sqlite3.DatabaseError as exc:
            raise self._damaged(exc) from None
        if res != ["ok"]:
            raise self._damaged(RuntimeError("; ".join(res[:3])))

    def _guard(self, fn):
        try:
            return retry_busy(fn)
        except sqlite3.DatabaseError as exc:
            raise self._damaged(exc) from None

    def get_many(self, hashes: list[str], encoder_key: str) -> dict[str, np.ndarray]:
        """The cached vectors among ``hashes`` (missing ones are absent)."""
        out: dict[str, np.ndarray] = {}
        for rows in select_by_hash(self._conn, "SELECT content_hash, dim, vector FROM embeddings "
                                   "WHERE encoder_key = ?", encoder_key, hashes, self._guard):
            for h, dim, blob in rows:
                if not isinstance(blob, bytes):
                    raise self._damaged(RuntimeError(f"a vector of type {type(blob).__name__}"))
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

        self._guard(write)

    def __len__(self) -> int:
        return self._guard(lambda: self._conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])

    def close(self) -> None:
        self._conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_TOKEN_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    content_hash TEXT NOT NULL,
    view_key     TEXT NOT NULL,
    shard        INTEGER NOT NULL,
    offset       INTEGER NOT NULL,
    shape        TEXT NOT NULL,
    created      REAL NOT NULL,
    PRIMARY KEY (content_hash, view_key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS photocritic_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO photocritic_meta VALUES ('format', 'photocritic-token-store');
INSERT OR IGNORE INTO photocritic_meta VALUES ('version', '1');
"""


class TokenStore:
    """Large views (``image.tokens``: T x C per image) as float16 rows in
    append-only shard files (``shard-00000.f16`` ...), indexed by SQLite
    (``index.sqlite``: content hash + view key -> shard, byte offset, shape).

    A batch's bytes are written and flushed to the shard before its index
    rows are committed, so a run killed at any point (SIGKILL included)
    leaves only complete, indexed rows; bytes of an unfinished batch are
    never referenced, and a re-run appends after them. Reads are
    memory-mapped views: memory stays flat in the number of images.
    Several processes may write at once (an exclusive lock on the shard
    while appending; SQLite's WAL for the index).
    """

    def __init__(self, directory: str | os.PathLike, shard_bytes: int = 1 << 30, timeout: float = 60.0):
        self.dir = Path(directory).expanduser()
        if self.dir.exists() and not self.dir.is_dir():
            raise CacheError(f"{self.dir} is a file, not a token store folder; pass another --cache")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.shard_bytes = shard_bytes
        self._maps: dict[int, np.memmap] = {}
        try:
            self._conn = sqlite3.connect(str(self.dir / "index.sqlite"), timeout=timeout,
                                         isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA busy_timeout = %d" % int(timeout * 1000))
            # two processes opening a new store at once: switching to WAL does
            # not wait on SQLite's busy timeout, so it is retried here
            retry_busy(lambda: self._conn.execute("PRAGMA journal_mode = WAL"))
            retry_busy(lambda: self._conn.executescript(_TOKEN_SCHEMA))
        except sqlite3.DatabaseError as exc:
            raise CacheError(f"the token store {self.dir} is damaged or unreadable ({exc}); move it "
                             f"aside or pass another --cache", "damaged") from None

    def _shard_path(self, k: int) -> Path:
        return self.dir / f"shard-{k:05d}.f16"

    def put_many(self, items: list[tuple[str, np.ndarray]], view_key: str) -> None:
        import fcntl

        if not items:
            return
        with open(self.dir / "append.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            k = 0
            while self._shard_path(k).exists() and self._shard_path(k).stat().st_size >= self.shard_bytes:
                k += 1
            rows = []
            now = time.time()
            with open(self._shard_path(k), "ab") as fh:
                for h, arr in items:
                    a = np.ascontiguousarray(arr, dtype=np.float16)
                    rows.append((h, view_key, k, fh.tell(), ",".join(map(str, a.shape)), now))
                    fh.write(a.tobytes())
                fh.flush()
                os.fsync(fh.fileno())
            self._maps.pop(k, None)  # the shard grew: map it anew on the next read
            with self._conn:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.executemany("INSERT OR REPLACE INTO tokens VALUES (?, ?, ?, ?, ?, ?)", rows)

    def _map(self, k: int) -> np.memmap:
        m = self._maps.get(k)
        if m is None:
            m = self._maps[k] = np.memmap(self._shard_path(k), dtype=np.float16, mode="r")
        return m

    def get_many(self, hashes: list[str], view_key: str) -> dict[str, np.ndarray]:
        """Memory-mapped float16 views (not copies) of the stored rows among ``hashes``."""
        out: dict[str, np.ndarray] = {}
        for rows in select_by_hash(self._conn, "SELECT content_hash, shard, offset, shape FROM tokens "
                                   "WHERE view_key = ?", view_key, hashes):
            for h, k, offset, shape in rows:
                dims = tuple(int(v) for v in shape.split(","))
                m = self._map(k)
                first = offset // 2
                count = int(np.prod(dims))
                if first + count > m.size:  # mapped before this batch was appended
                    self._maps.pop(k, None)
                    m = self._map(k)
                out[h] = m[first:first + count].reshape(dims)
        return out

    def __len__(self) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM tokens").fetchone()[0]

    def close(self) -> None:
        self._maps.clear()
        self._conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def token_store_for(cache_path: str | os.PathLike) -> TokenStore:
    """The token store beside an embedding cache file: ``<file>.tokens/``."""
    p = Path(cache_path).expanduser()
    return TokenStore(p.with_name(p.name + ".tokens"))


@contextlib.contextmanager
def token_session(cache_path: str | os.PathLike | None):
    """``(token store, cache file path)`` beside ``cache_path``, or, with
    None (no cache), in a temporary folder removed afterwards; the store is
    closed on exit."""
    holder = None
    if cache_path is None:
        import tempfile

        holder = tempfile.TemporaryDirectory(prefix="photocritic-tokens-")
        cache_path = Path(holder.name) / "features.sqlite"
    path = Path(cache_path).expanduser()
    store = token_store_for(path)
    try:
        yield store, path
    finally:
        store.close()
        if holder is not None:
            holder.cleanup()
