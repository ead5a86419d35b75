"""ScoreCache / CachedScorer: hits and misses, persistence, exact-text keys, fingerprints that follow the weights,
and two processes writing the same file at once."""

import multiprocessing
import pickle
import sqlite3

import pytest

from trl_rewards.evaluation.cache import (
    CachedScorer,
    ScoreCache,
    path_fingerprint,
    scorer_identity,
    state_dict_fingerprint,
    text_key,
)


class CountingScorer:
    """Score = number of characters of prompt + completion; counts how many texts it was asked to score."""

    def __init__(self):
        self.seen = []

    def score(self, prompts, completions):
        self.seen += list(completions)
        return [float(len(str(p)) + len(str(c))) for p, c in zip(prompts, completions, strict=True)]


def test_hits_misses_and_persistence(tmp_path):
    path = tmp_path / "cache" / "scores.sqlite"
    inner = CountingScorer()
    scorer = CachedScorer(inner, ScoreCache(path), model_id="m1")
    assert scorer.score(["a", "b", "a"], ["x", "yy", "x"]) == [2.0, 3.0, 2.0]
    assert (scorer.misses, scorer.hits, inner.seen) == (2, 1, ["x", "yy"])  # the repeated row is scored once
    assert scorer.score(["b", "c"], ["yy", "zzz"]) == [3.0, 4.0]
    assert (scorer.misses, scorer.hits, inner.seen) == (3, 2, ["x", "yy", "zzz"])
    scorer.cache.close()

    reopened = CachedScorer(CountingScorer(), str(path), model_id="m1")  # a new instance on the same file
    assert reopened.score(["a", "c"], ["x", "zzz"]) == [2.0, 4.0]
    assert (reopened.misses, reopened.hits, reopened.scorer.seen) == (0, 2, [])
    other_model = CachedScorer(CountingScorer(), reopened.cache, model_id="m2")
    other_model.score(["a"], ["x"])
    assert other_model.misses == 1
    assert reopened.cache.models() == {"m1": 3, "m2": 1} and len(reopened.cache) == 4


def test_keys_are_exact_texts(tmp_path):
    """Prompt/completion boundaries, chat structure, None and whitespace all make distinct keys."""
    cache = ScoreCache(tmp_path / "c.sqlite")
    prompts = ["a", "ab", None, "", [{"role": "user", "content": "ab"}], "a "]
    completions = ["bc", "c", "abc", "abc", "c", "bc"]
    assert len({text_key(p, c)[2] for p, c in zip(prompts, completions, strict=True)}) == len(prompts)
    cache.put_many("m", prompts, completions, [1, 2, 3, 4, 5, 6])
    assert cache.get_many("m", prompts[::-1], completions[::-1]) == [6.0, 5.0, 4.0, 3.0, 2.0, 1.0]
    assert cache.get_many("m", ["a"], ["b c"]) == [None]
    assert cache.put_many("m", ["a"], ["bc"], [99.0]) == 0  # first write wins, nothing is overwritten
    assert cache.get_many("m", ["a"], ["bc"]) == [1.0]
    with pytest.raises(ValueError, match=r"scores\[1\] is nan"):
        cache.put_many("m", ["x", "y"], ["1", "2"], [1.0, float("nan")])
    with pytest.raises(ValueError, match="got 1 prompts but 2 scores"):
        cache.put_many("m", ["x"], ["1"], [1.0, 2.0])
    assert cache.count("m") == 6  # the failed writes left nothing behind
    clone = pickle.loads(pickle.dumps(cache))  # the connection is reopened lazily in the new object
    assert clone.get_many("m", ["a"], ["bc"]) == [1.0]


def test_fingerprints_follow_the_weights(tmp_path):
    import torch

    from trl_rewards.inference.sequence_scoring import RewardScorer
    from trl_rewards.testing import save_tiny, tiny_bert_reward_model

    model, tok = tiny_bert_reward_model()
    folder = save_tiny(model, tok, tmp_path / "rm")
    first = path_fingerprint(folder)
    assert path_fingerprint(folder) == first
    in_memory = state_dict_fingerprint(model)
    assert state_dict_fingerprint(tiny_bert_reward_model()[0]) == in_memory  # same seed, same weights
    with torch.no_grad():
        model.classifier.weight.add_(1e-3)
    assert state_dict_fingerprint(model) != in_memory
    model.save_pretrained(folder)
    assert path_fingerprint(folder) != first
    scorer = RewardScorer(model, tok)
    identity = scorer_identity(scorer, folder)
    assert identity.startswith(str(folder))
    assert identity.endswith("dtype=torch.float32|max_length=512|normalize=0.0,1.0")  # default: the position limit
    assert scorer_identity(RewardScorer(model, tok, max_length=64), folder) != identity  # truncation changes scores
    assert state_dict_fingerprint(model) in scorer_identity(scorer)  # no path: the weights in memory
    with pytest.raises(ValueError, match="pass model_id="):
        CachedScorer(CountingScorer(), tmp_path / "c.sqlite")
    with pytest.raises(FileNotFoundError):
        path_fingerprint(tmp_path / "missing")


class _LockedAtFirst:
    """A connection whose first `fails` WAL switches fail as SQLite's do when two processes create a cache at once
    ("database is locked", returned without calling the busy handler)."""

    def __init__(self, connection, fails):
        self.connection, self.fails, self.attempts = connection, fails, 0

    def execute(self, sql, *args):
        if sql.startswith("PRAGMA journal_mode"):
            self.attempts += 1
            if self.attempts <= self.fails:
                raise sqlite3.OperationalError("database is locked")
        return self.connection.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self.connection, name)


def test_wal_switch_is_retried_within_the_timeout(tmp_path, monkeypatch):
    import trl_rewards.evaluation.cache as cache_module

    opened = []
    connect = sqlite3.connect

    def locked_connect(*args, **kwargs):
        opened.append(_LockedAtFirst(connect(*args, **kwargs), fails=3))
        return opened[-1]

    monkeypatch.setattr(cache_module.sqlite3, "connect", locked_connect)
    cache = ScoreCache(tmp_path / "retry.sqlite", timeout=5)
    assert opened[0].attempts == 4  # three refusals, then WAL
    cache.put_many("m", ["p"], ["c"], [1.5])
    assert cache.get_many("m", ["p"], ["c"]) == [1.5]
    cache.close()

    opened.clear()
    monkeypatch.setattr(cache_module.sqlite3, "connect", lambda *a, **k: _LockedAtFirst(connect(*a, **k), fails=10**9))
    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        ScoreCache(tmp_path / "never.sqlite", timeout=0.1)  # still locked when the timeout is spent: the error


def _writer(path, worker, start, stop, barrier):
    """Writes rows start..stop-1 one small transaction at a time, racing the other process."""
    cache = ScoreCache(path, timeout=30)
    barrier.wait()
    for i in range(start, stop):
        cache.put_many("shared", [f"p{i}"], [f"c{i}"], [i * 0.5])
        if i % 10 == 0:  # a batch too, and reads in between writes
            cache.put_many(f"w{worker}", [f"p{j}" for j in range(i, i + 5)], ["x"] * 5, [1.0] * 5)
            assert cache.get_many("shared", [f"p{i}"], [f"c{i}"]) == [i * 0.5]
    cache.close()


@pytest.mark.multiprocess
def test_two_processes_write_concurrently(tmp_path):
    """Processes write rows 0-299 and 150-449 of one model (overlapping) and their own rows, at the same time."""
    path = str(tmp_path / "shared.sqlite")
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    workers = [
        context.Process(target=_writer, args=(path, 0, 0, 300, barrier)),
        context.Process(target=_writer, args=(path, 1, 150, 450, barrier)),
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0]
    cache = ScoreCache(path)
    assert cache.models() == {"shared": 450, "w0": 30 * 5, "w1": 30 * 5}
    assert cache.get_many("shared", [f"p{i}" for i in range(450)], [f"c{i}" for i in range(450)]) == [
        i * 0.5 for i in range(450)
    ]
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_normalizing_ensembles_are_not_cached(tmp_path):
    from trl_rewards.evaluation.runner import as_scorer
    from trl_rewards.rewards.ensemble import RewardEnsemble

    def length(prompts, completions, **kwargs):
        return [float(len(c)) for c in completions]

    with pytest.raises(ValueError, match="cannot be cached"):
        CachedScorer(as_scorer(RewardEnsemble([length])), tmp_path / "c.sqlite", model_id="ens")
    plain = CachedScorer(as_scorer(RewardEnsemble([length], normalization="none")), tmp_path / "c.sqlite", "ens")
    assert plain.score(["p"], ["abc"]) == [3.0]
