"""Group commit: concurrent requests share one transaction, each keeping its own outcome."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["GroupCommit"]

RequestT = TypeVar("RequestT")
ResultT = TypeVar("ResultT")


class GroupCommit(Generic[RequestT, ResultT]):
    """Run ``run_batch`` over whatever requests are waiting, one batch at a time.

    Requests that arrive while a batch is in the database join the next batch, so under load one
    transaction serves many requests, while a lone request still runs at once. ``run_batch``
    returns one result per request (or an exception for that request alone); if it raises, every
    request of the batch fails with that error. The batch runs on a thread for PostgreSQL
    (network round trips), on the event loop when ``inline`` (SQLite: a batch is short, and a
    thread would add a hand-off of the GIL per batch; measured, the two ways were within noise
    for PostgreSQL).
    """

    def __init__(self, run_batch: Callable[[Sequence[RequestT]], Sequence[ResultT | BaseException]], *,
                 inline: bool = False, max_batch: int = 128) -> None:
        self._run_batch = run_batch
        self._inline = inline
        self._max_batch = max_batch
        self._pending: list[tuple[RequestT, asyncio.Future[ResultT | BaseException]]] = []
        self._busy = False

    async def run(self, request: RequestT) -> ResultT:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[ResultT | BaseException] = loop.create_future()
        self._pending.append((request, future))
        if not self._busy:
            self._busy = True
            loop.call_soon(self._start, loop)  # after the requests that are ready now have joined
        result = await future
        if isinstance(result, BaseException):
            raise result
        return result

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
        requests = [request for request, _ in batch]
        if self._inline:
            try:
                results: Sequence[ResultT | BaseException] = self._run_batch(requests)
            except Exception as exc:
                results = [exc] * len(batch)
            self._deliver(loop, batch, results)
            return
        done = loop.run_in_executor(None, self._run_batch, requests)

        def finished(future: asyncio.Future[Sequence[ResultT | BaseException]]) -> None:
            error = future.exception()
            self._deliver(loop, batch, [error] * len(batch) if error else future.result())

        done.add_done_callback(finished)

    def _deliver(self, loop: asyncio.AbstractEventLoop,
                 batch: list[tuple[RequestT, asyncio.Future[ResultT | BaseException]]],
                 results: Sequence[ResultT | BaseException]) -> None:
        for (_, future), result in zip(batch, results):
            if not future.done():  # a client that went away leaves a cancelled future
                future.set_result(result)
        if self._pending:
            loop.call_soon(self._start, loop)
        else:
            self._busy = False
