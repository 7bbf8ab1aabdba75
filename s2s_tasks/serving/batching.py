"""Request batching: concurrent requests are gathered into one model call.

The first waiting request opens a batch; requests that arrive within ``max_wait_ms`` and decode
with the same settings join it, up to ``max_batch_records`` records (a request is never split: a
larger one runs alone). The batch runs in one worker thread, so torch never blocks the event loop
and one model call runs at a time; requests that arrive meanwhile queue up and form the next
batch. Each request gets back its own answers (or its own error).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Dict, Hashable, List, Optional, Sequence

log = logging.getLogger(__name__)

#: answer(changes, [records of each request]) -> per request its answers or an exception
AnswerBatch = Callable[[Dict[str, Any], Sequence[List[Any]]], List[Any]]


@dataclass
class _Waiting:
    records: List[Any]
    key: Hashable
    changes: Dict[str, Any]
    future: asyncio.Future


class Batcher:
    """Gathers requests into batches and runs them in a worker thread (see the module docstring).

    Args:
        answer: answers one batch (called in the worker thread only).
        max_batch_records: records per batch at most.
        max_wait_ms: how long the first request of a batch waits for others.
        on_batch: called with (records, requests) of each batch run (metrics).
    """

    def __init__(self, answer: AnswerBatch, max_batch_records: int, max_wait_ms: float,
                 on_batch: Optional[Callable[[int, int], None]] = None) -> None:
        self.answer = answer
        self.max_batch_records = max_batch_records
        self.max_wait_s = max_wait_ms / 1000.0
        self.on_batch = on_batch
        self._waiting: List[_Waiting] = []
        self._arrived: Optional[asyncio.Event] = None
        self._loop_task: Optional[asyncio.Task] = None
        self._executor: Optional[ThreadPoolExecutor] = None

    async def start(self) -> None:
        """Start gathering (in the running event loop)."""
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="s2s-model")
        self._loop_task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop gathering; requests still waiting fail with ``RuntimeError``."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            try:
                await self._loop_task
            except asyncio.CancelledError:
                pass
        for waiting in self._waiting:
            if not waiting.future.done():
                waiting.future.set_exception(RuntimeError("the server is shutting down"))
        self._waiting.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def submit(self, records: List[Any], key: Hashable, changes: Dict[str, Any]) -> List[Any]:
        """Answer ``records`` in a batch with other requests of the same ``key`` (decoding
        settings ``changes``); raises the exception the batch function gave this request."""
        if self._arrived is None:
            raise RuntimeError("the batcher is not started (Batcher.start() runs at server startup)")
        future = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(records, key, changes, future))
        self._arrived.set()
        return await future

    # ------------------------------------------------------------------------- the gathering loop
    def _records_waiting(self, key: Hashable) -> int:
        return sum(len(w.records) for w in self._waiting if w.key == key and not w.future.done())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            self._waiting = [w for w in self._waiting if not w.future.done()]  # clients that went away
            if not self._waiting:
                continue
            first = self._waiting[0]
            deadline = loop.time() + self.max_wait_s
            while self._records_waiting(first.key) < self.max_batch_records and loop.time() < deadline:
                try:
                    await asyncio.wait_for(self._arrived.wait(), deadline - loop.time())
                except asyncio.TimeoutError:
                    break
                self._arrived.clear()
            batch = self._take(first.key)
            if self._waiting:
                self._arrived.set()  # others wait already: the next batch starts at once
            if batch:
                await self._run_batch(loop, batch)

    def _take(self, key: Hashable) -> List[_Waiting]:
        """The waiting requests of ``key``, oldest first, up to the record limit (at least one)."""
        batch: List[_Waiting] = []
        kept: List[_Waiting] = []
        records = 0
        for waiting in self._waiting:
            if waiting.future.done():
                continue
            fits = not batch or records + len(waiting.records) <= self.max_batch_records
            if waiting.key == key and fits:
                batch.append(waiting)
                records += len(waiting.records)
            else:
                kept.append(waiting)
        self._waiting = kept
        return batch

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, batch: List[_Waiting]) -> None:
        if self.on_batch is not None:
            self.on_batch(sum(len(w.records) for w in batch), len(batch))
        try:
            results = await loop.run_in_executor(self._executor, self.answer, batch[0].changes, [w.records for w in batch])
        except Exception as err:  # the batch function failed as a whole: every request of it fails
            log.exception("a batch of %d request(s) failed", len(batch))
            results = [err] * len(batch)
        for waiting, result in zip(batch, results):
            if waiting.future.done():  # the client went away
                continue
            if isinstance(result, Exception):
                waiting.future.set_exception(result)
            else:
                waiting.future.set_result(result)
