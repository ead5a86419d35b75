"""Calling reward functions in TRL's contract from sync and async code, naming them, and checking what they return.

TRL's `GRPOTrainer` / `RLOOTrainer` treat a reward function as async when calling it returns a coroutine, which
[`is_async_callable`] decides exactly as `trl.trainer.utils.is_async_callable` does (a function, a
`functools.partial` of one, or an instance whose class has an `async def __call__`); they await the async ones
together on an event loop of their own. [`call_members`] does the same for the members of a
[`~trl_rewards.rewards.ensemble.RewardEnsemble`]: the async members are awaited concurrently while the sync ones run
one after the other in a worker thread, so local scoring overlaps the network wait of remote members.
[`run_blocking`] waits for an awaitable from sync code (the PPO adapter, an ensemble used synchronously, calibration).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import math
import os
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

_background: tuple[int, asyncio.AbstractEventLoop] | None = None
_background_lock = threading.Lock()


def is_async_callable(func: Callable) -> bool:
    """Whether calling `func` returns a coroutine: `trl.trainer.utils.is_async_callable`'s test (a non-callable is
    not async here, where TRL's would raise)."""
    while isinstance(func, functools.partial):
        func = func.func
    return inspect.iscoroutinefunction(func) or (callable(func) and inspect.iscoroutinefunction(func.__call__))


def _background_loop() -> asyncio.AbstractEventLoop:
    """This process's event-loop thread for sync callers (started once; a forked child starts its own)."""
    global _background
    with _background_lock:
        if _background is None or _background[0] != os.getpid():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="trl_rewards-reward-calls", daemon=True).start()
            _background = (os.getpid(), loop)
        return _background[1]


def run_blocking(awaitable: Awaitable) -> Any:
    """
    Waits for `awaitable` from sync code and returns its result (or raises its exception).

    It runs on one event-loop thread shared by the process, so clients bound to a loop (e.g. the HTTP connections
    of a [`RemoteRewardFunction`]) are reused from call to call. Called from a coroutine (a thread whose loop is
    running, which must not block on itself), it runs on a fresh loop in a worker thread instead.
    """

    async def wait():
        return await awaitable

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run_coroutine_threadsafe(wait(), _background_loop()).result()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, wait()).result()


def outcome(func: Callable, arguments: Mapping[str, Any]) -> Any:
    """`func(**arguments)` from sync code (awaited when it returns an awaitable), or the exception it raised."""
    try:
        output = func(**arguments)
        return run_blocking(output) if inspect.isawaitable(output) else output
    except Exception as error:
        return error


async def call_members(members: Mapping[str, Callable], arguments: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """
    Calls every member with `arguments`: the async ones concurrently on the running loop, the sync ones one after
    the other (in member order) in one worker thread meanwhile.

    Returns:
        `list[tuple[str, Any]]`: `(name, output)` in member order, the output being the exception a member raised.
    """
    sync = [name for name, func in members.items() if not is_async_callable(func)]
    pending = [name for name in members if name not in sync]

    def run_sync() -> dict[str, Any]:
        return {name: outcome(members[name], arguments) for name in sync}

    async def run_async(func: Callable) -> Any:
        try:
            return await func(**arguments)
        except Exception as error:
            return error

    results = await asyncio.gather(
        asyncio.to_thread(run_sync) if sync else asyncio.sleep(0, {}), *(run_async(members[n]) for n in pending)
    )
    outputs = {**results[0], **dict(zip(pending, results[1:], strict=True))}
    return [(name, outputs[name]) for name in members]


def checked_rewards(output: Any, n: int) -> list[float]:
    """
    The `n` rewards a reward function returned, as floats with `None` (and NaN) as NaN.

    Raises:
        `ValueError`: naming what is wrong (not a list, a wrong count, a value that is not a finite number or `None`),
        worded to follow "reward function X ...".
    """
    try:
        output = list(output)
    except TypeError as error:
        raise ValueError(f"returned {type(output).__name__}, not a list") from error
    if len(output) != n:
        raise ValueError(f"returned {len(output)} rewards for {n} completions")
    values = []
    for i, value in enumerate(output):
        if value is None:
            values.append(math.nan)
            continue
        if isinstance(value, bool | str | bytes) or not isinstance(value, int | float | np.number):
            # float("1.5") or float(True) would pass silently: a function returning them has a bug
            raise ValueError(f"returned {value!r} at index {i}, not a number")
        value = float(value)
        if math.isinf(value):
            raise ValueError(f"returned {value} at index {i}")
        values.append(value)
    return values


def reward_function_name(func: Callable) -> str:
    """A reward function's display name, as TRL computes it: `__name__`, else the class name."""
    while isinstance(func, functools.partial):
        func = func.func
    return getattr(func, "__name__", type(func).__name__)


def named_members(members) -> dict[str, Callable]:
    """`{name: function}` of an ensemble's members (a sequence named by [`reward_function_name`], or a mapping)."""
    if isinstance(members, Mapping):
        named = dict(members)
    elif isinstance(members, Sequence) and not isinstance(members, str):
        named = {}
        for member in members:
            name = reward_function_name(member)
            if name in named:
                raise ValueError(
                    f"two members are named {name!r}; give them distinct names (e.g. RewardModelFunction(..., "
                    "name=...)) or pass a mapping {name: function}"
                )
            named[name] = member
    else:
        raise TypeError(f"members must be a sequence or a mapping of reward functions, got {type(members).__name__}")
    if not named:
        raise ValueError("a RewardEnsemble needs at least one member")
    for name, member in named.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"member names must be non-empty strings, got {name!r}")
        if isinstance(member, torch.nn.Module):
            raise TypeError(
                f"member {name!r} is a torch.nn.Module; wrap a reward model in RewardModelFunction(model, "
                "tokenizer) so that it brings its own tokenizer"
            )
        if not callable(member):
            raise TypeError(f"member {name!r} is not callable ({type(member).__name__})")
    return named
