"""A persistent score cache: a reward model's score of an exact `(prompt, completion)` is computed once.

Scores live in one sqlite file, keyed by **model identity** and **exact text**:

- *Model identity* is a string naming everything that changes a score: the weights and the scorer's settings
  (`max_length` truncation, normalization statistics). Weights are fingerprinted in one of two ways:

  - a folder on disk (`path_fingerprint`): SHA-256 over every file directly in the folder (weights, configs,
    tokenizer files), each contributing its name, size, modification time (ns) and the SHA-256 of its first and last
    MiB. Cheap for any model size; touching or copying the files only costs cache misses, never wrong hits. For a
    PEFT adapter folder the base model's folder (from `adapter_config.json`) is fingerprinted too, when local.
  - a model in memory (`state_dict_fingerprint`): SHA-256 over every tensor's name, dtype, shape and bytes. Exact
    (a model changed in memory gets a new identity) but reads every weight once: about a second per GB.

- *Exact text* is the JSON encoding of the prompt (a string, `None`, or a list of chat messages) and of the
  completion; rows are looked up by the SHA-256 of both and the stored texts are compared too.

Concurrency: the database runs in WAL mode (readers never block the writer), every write is one
`BEGIN IMMEDIATE` transaction (the write lock is taken up front, so two writers queue instead of failing on a lock
upgrade) and `busy_timeout` makes a waiting writer retry for up to `timeout` seconds (the switch to WAL, for which
SQLite calls no busy handler, is retried by us within the same time). Inserts are
`INSERT OR IGNORE`: when two processes score the same text, the first row wins and no row is ever half-written.
WAL needs a local file system (not NFS). A connection is opened lazily per process, so a `ScoreCache` can be
pickled into worker processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

SCHEMA_VERSION = "1"
_CHUNK = 500  # rows per SELECT ... IN (...); below every sqlite build's variable limit
_EDGE_BYTES = 1 << 20

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS scores (model TEXT NOT NULL, key BLOB NOT NULL, prompt TEXT NOT NULL, "
    "completion TEXT NOT NULL, score REAL NOT NULL, created REAL NOT NULL, PRIMARY KEY (model, key)) WITHOUT ROWID",
)


def text_key(prompt: Any, completion: Any) -> tuple[str, str, bytes]:
    """Returns `(prompt_json, completion_json, sha256)`: the exact texts as stored and their lookup key."""
    prompt_json = json.dumps(prompt, ensure_ascii=False, sort_keys=True)
    completion_json = json.dumps(completion, ensure_ascii=False, sort_keys=True)
    digest = hashlib.sha256(f"{len(prompt_json)}:{prompt_json}{completion_json}".encode()).digest()
    return prompt_json, completion_json, digest


def path_fingerprint(path: str | os.PathLike) -> str:
    """
    Fingerprint of a model folder (see the module docstring), or of a single weights file.

    Args:
        path (`str` or `os.PathLike`): a model or adapter folder, or one file.

    Returns:
        `str`: `"sha256:<hex>"`.
    """
    path = os.fspath(path)
    if os.path.isfile(path):
        files = [path]
    elif os.path.isdir(path):
        files = sorted(os.path.join(path, name) for name in os.listdir(path))
        files = [f for f in files if os.path.isfile(f)]
    else:
        raise FileNotFoundError(f"cannot fingerprint {path!r}: no such file or folder")
    if not files:
        raise ValueError(f"cannot fingerprint {path!r}: the folder holds no files")
    digest = hashlib.sha256()
    for file in files:
        stat = os.stat(file)
        digest.update(f"{os.path.basename(file)}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
        with open(file, "rb") as f:
            digest.update(hashlib.sha256(f.read(_EDGE_BYTES)).digest())
            if stat.st_size > _EDGE_BYTES:
                f.seek(max(_EDGE_BYTES, stat.st_size - _EDGE_BYTES))
                digest.update(hashlib.sha256(f.read()).digest())
    adapter_config = os.path.join(path, "adapter_config.json")
    if os.path.isfile(adapter_config):
        with open(adapter_config) as f:
            base = json.load(f).get("base_model_name_or_path")
        if base and os.path.isdir(base):
            digest.update(path_fingerprint(base).encode())
    return f"sha256:{digest.hexdigest()}"


def state_dict_fingerprint(model) -> str:
    """
    Fingerprint of a model's weights in memory: SHA-256 over each state-dict tensor's name, dtype, shape and bytes.

    Args:
        model (`torch.nn.Module`): any module (plain or PEFT); tensors on any device, any dtype.

    Returns:
        `str`: `"sha256:<hex>"`.
    """
    import torch

    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        if tensor.device.type == "meta":
            raise ValueError(f"cannot fingerprint {name!r}: it is on the meta device (not materialized)")
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        flat = tensor.detach().reshape(-1).contiguous().cpu()
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return f"sha256:{digest.hexdigest()}"


def scorer_identity(scorer, path: str | os.PathLike | None = None) -> str:
    """
    Model identity of a [`RewardScorer`]-like object for the cache: its weights' fingerprint (of `path` when it is a
    local file or folder, else of the weights in memory) plus the settings that change its scores (weights dtype,
    truncation length, normalization statistics).

    Args:
        scorer: an object with a `.model` (`torch.nn.Module`); `max_length`, `mean` and `std` are read when present.
        path (`str`, *optional*): where the model was loaded from.

    Returns:
        `str`: e.g. `"/models/rm|sha256:…|dtype=torch.float32|max_length=512|normalize=0.0,1.0"`.
    """
    model = getattr(scorer, "model", None)
    if path is not None and os.path.exists(path):
        name, fingerprint = os.path.abspath(path), path_fingerprint(path)
    elif model is not None:
        name = getattr(model, "name_or_path", None) or type(model).__name__
        fingerprint = state_dict_fingerprint(model)
    else:
        raise ValueError(
            f"cannot derive a model identity for {type(scorer).__name__} (no local path and no `.model`); pass "
            "model_id= explicitly, naming everything that changes its scores"
        )
    settings = f"dtype={next(model.parameters()).dtype}|" if model is not None else ""
    settings += f"max_length={getattr(scorer, 'max_length', None)}"
    settings += f"|normalize={float(getattr(scorer, 'mean', 0.0))!r},{float(getattr(scorer, 'std', 1.0))!r}"
    return f"{name}|{fingerprint}|{settings}"


class ScoreCache:
    """
    Persistent, multi-process-safe store of reward scores (see the module docstring for keys and locking).

    Args:
        path (`str` or `os.PathLike`): the sqlite file; created (with its folder) if missing.
        timeout (`float`, *optional*, defaults to `60.0`): seconds a writer waits for the lock before failing.
    """

    def __init__(self, path: str | os.PathLike, timeout: float = 60.0):
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        self.path = os.path.abspath(os.fspath(path))
        self.timeout = timeout
        self._connection: sqlite3.Connection | None = None
        self._pid: int | None = None
        self._connect()

    def _connect(self) -> sqlite3.Connection:
        if self._connection is not None and self._pid == os.getpid():
            return self._connection
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        # isolation_level=None: no implicit transactions, so BEGIN IMMEDIATE below is the only one.
        connection = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        connection.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        mode = self._enable_wal(connection)
        if mode.lower() != "wal":
            connection.close()
            raise RuntimeError(f"{self.path}: sqlite refused WAL mode (got {mode!r}); use a local file system")
        connection.execute("PRAGMA synchronous = NORMAL")  # durable across process crashes, the WAL default
        with _immediate(connection):
            for statement in _SCHEMA:  # not executescript: it would COMMIT the open transaction first
                connection.execute(statement)
            connection.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
        version = connection.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()[0]
        if version != SCHEMA_VERSION:
            connection.close()
            raise RuntimeError(f"{self.path}: score cache schema {version!r}, this version reads {SCHEMA_VERSION!r}")
        self._connection, self._pid = connection, os.getpid()
        return connection

    def _enable_wal(self, connection: sqlite3.Connection) -> str:
        """
        Switches a (possibly brand-new) database to WAL and returns the journal mode. SQLite does not call the busy
        handler for this switch, so when two processes open a new cache at once one gets "database is locked" at
        once; retry it ourselves, within the same `timeout`.
        """
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                return connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() >= deadline:
                    connection.close()
                    raise
                time.sleep(0.02)

    def get_many(self, model_id: str, prompts: Sequence[Any], completions: Sequence[Any]) -> list[float | None]:
        """Cached scores of each `(prompt, completion)` under `model_id`, `None` where absent, in input order."""
        _check_lengths(prompts, completions)
        keys = [text_key(p, c) for p, c in zip(prompts, completions, strict=True)]
        found: dict[bytes, tuple[str, str, float]] = {}
        unique = list(dict.fromkeys(k[2] for k in keys))
        connection = self._connect()
        for start in range(0, len(unique), _CHUNK):
            chunk = unique[start : start + _CHUNK]
            rows = connection.execute(
                f"SELECT key, prompt, completion, score FROM scores WHERE model = ? AND key IN "
                f"({','.join('?' * len(chunk))})",
                (model_id, *chunk),
            ).fetchall()
            found.update({key: (prompt, completion, score) for key, prompt, completion, score in rows})
        out = []
        for prompt_json, completion_json, key in keys:
            row = found.get(key)
            out.append(row[2] if row is not None and row[:2] == (prompt_json, completion_json) else None)
        return out

    def put_many(
        self, model_id: str, prompts: Sequence[Any], completions: Sequence[Any], scores: Sequence[float]
    ) -> int:
        """Stores scores in one transaction (existing rows are kept); returns the number of new rows."""
        _check_lengths(prompts, completions)
        if len(scores) != len(prompts):
            raise ValueError(f"got {len(prompts)} prompts but {len(scores)} scores")
        rows = []
        now = time.time()
        for i, (prompt, completion, score) in enumerate(zip(prompts, completions, scores, strict=True)):
            score = float(score)
            if score != score or score in (float("inf"), float("-inf")):
                raise ValueError(f"scores[{i}] is {score}; only finite scores are cached")
            prompt_json, completion_json, key = text_key(prompt, completion)
            rows.append((model_id, key, prompt_json, completion_json, score, now))
        connection = self._connect()
        with _immediate(connection):
            before = connection.total_changes
            connection.executemany("INSERT OR IGNORE INTO scores VALUES (?, ?, ?, ?, ?, ?)", rows)
            return connection.total_changes - before

    def count(self, model_id: str | None = None) -> int:
        """Number of cached scores, of one model or of all."""
        if model_id is None:
            return self._connect().execute("SELECT COUNT(*) FROM scores").fetchone()[0]
        return self._connect().execute("SELECT COUNT(*) FROM scores WHERE model = ?", (model_id,)).fetchone()[0]

    def models(self) -> dict[str, int]:
        """Every cached model identity with its number of scores."""
        rows = self._connect().execute("SELECT model, COUNT(*) FROM scores GROUP BY model ORDER BY model")
        return dict(rows.fetchall())

    def __len__(self) -> int:
        return self.count()

    def close(self) -> None:
        if self._connection is not None and self._pid == os.getpid():
            self._connection.close()
        self._connection = None

    def __enter__(self) -> ScoreCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        return {"path": self.path, "timeout": self.timeout, "_connection": None, "_pid": None}

    def __repr__(self) -> str:
        return f"ScoreCache({self.path!r})"


class _immediate:
    """`BEGIN IMMEDIATE` ... `COMMIT` (or `ROLLBACK` on error) on an autocommit connection."""

    def __init__(self, connection: sqlite3.Connection):
        self.connection = connection

    def __enter__(self):
        self.connection.execute("BEGIN IMMEDIATE")
        return self.connection

    def __exit__(self, exc_type, *exc):
        self.connection.execute("ROLLBACK" if exc_type is not None else "COMMIT")


def _check_lengths(prompts: Sequence[Any], completions: Sequence[Any]) -> None:
    if len(prompts) != len(completions):
        raise ValueError(f"got {len(prompts)} prompts but {len(completions)} completions")


class CachedScorer:
    """
    Wraps a scorer (anything with `score(prompts, completions) -> list[float]`) so that only cache misses are
    computed; every other attribute (`encode`, `tokenizer`, `n_truncated`, ...) is the wrapped scorer's. The scorer
    must score each text independently of the others in the call (a [`RewardScorer`] does; a normalizing
    `RewardEnsemble` does not and is rejected).

    Args:
        scorer: the scorer to wrap, e.g. a [`RewardScorer`] or `evaluation.as_scorer(reward_function)`.
        cache ([`ScoreCache`] or `str`): a cache or the path of its sqlite file.
        model_id (`str`, *optional*): the model identity; by default `scorer_identity(scorer, path)`.
        path (`str`, *optional*): the folder the model was loaded from, for a cheap file fingerprint.

    Counters: `misses` counts the texts sent to the wrapped scorer, `hits` the rows answered without it (a text
    repeated within one call is scored once, its repeats count as hits).
    """

    def __init__(self, scorer, cache: ScoreCache | str | os.PathLike, model_id: str | None = None, path=None):
        if not callable(getattr(scorer, "score", None)):
            raise TypeError(f"scorer must have a score(prompts, completions) method, got {type(scorer).__name__}")
        function = getattr(scorer, "reward_function", scorer)
        if getattr(function, "normalization", "none") != "none":  # evaluation.scores_depend_on_batch
            raise ValueError(
                f"{function!r} normalizes each call, so a text's score depends on the texts scored with it and "
                "cannot be cached; cache its members instead, or use normalization='none'"
            )
        self.scorer = scorer
        self.cache = cache if isinstance(cache, ScoreCache) else ScoreCache(cache)
        self.model_id = model_id if model_id is not None else scorer_identity(scorer, path)
        self.hits = 0
        self.misses = 0

    def score(self, prompts: Sequence[Any], completions: Sequence[Any]) -> list[float]:
        """Scores each `(prompt, completion)`, reading cached scores and computing (then storing) the rest."""
        cached = self.cache.get_many(self.model_id, prompts, completions)
        todo: dict[bytes, int] = {}
        for i, value in enumerate(cached):
            if value is None:
                todo.setdefault(text_key(prompts[i], completions[i])[2], i)
        rows = list(todo.values())
        if rows:
            computed = self.scorer.score([prompts[i] for i in rows], [completions[i] for i in rows])
            if len(computed) != len(rows):
                raise ValueError(f"the wrapped scorer returned {len(computed)} scores for {len(rows)} inputs")
            self.cache.put_many(self.model_id, [prompts[i] for i in rows], [completions[i] for i in rows], computed)
            by_key = {key: float(s) for key, s in zip(todo, computed, strict=True)}
            cached = [
                by_key[text_key(p, c)[2]] if v is None else v
                for p, c, v in zip(prompts, completions, cached, strict=True)
            ]
        self.misses += len(rows)
        self.hits += len(prompts) - len(rows)
        return cached

    def __getattr__(self, name: str):
        if name.startswith("_") or name in ("scorer", "cache", "model_id", "hits", "misses"):
            raise AttributeError(name)
        return getattr(self.scorer, name)
