"""Background prefetching: decode the next videos while the device runs on this one.

    for frames, labels in prefetch(voc.translated_videos(root, shift=32), size=2):
        ...

A daemon thread pulls items from the source iterator into a bounded queue, so at most ``size``
decoded items wait in memory. Image decoding (Pillow, numpy) releases the GIL for most of its
work, so a thread is enough; no process pool, no pickling.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

_POLL_S = 0.05  # how often a blocked producer checks whether the consumer has gone
_JOIN_S = 1.0  # how long close() waits for the producer to finish its current item


class _End:
    """Queue marker: the source is exhausted."""


class _Failure:
    """Queue marker carrying the exception the source raised."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _produce(source: Iterator[T], items: queue.Queue, stop: threading.Event) -> None:
    """Producer thread: move items from ``source`` to ``items`` until done or told to stop."""
    try:
        for item in source:
            if not _put(items, item, stop):
                return
        _put(items, _End(), stop)
    except Exception as error:  # handed to the consumer, which re-raises it
        _put(items, _Failure(error), stop)
    finally:
        close = getattr(source, "close", None)
        if stop.is_set() and close is not None:
            close()  # run the source generator's cleanup in the thread that drove it


def _put(items: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Put ``item``, waiting for room; False if the consumer stopped first."""
    while not stop.is_set():
        try:
            items.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


class Prefetcher(Generic[T], Iterator[T]):
    """Iterator over a source's items, produced ahead by a background thread.

    Made by `prefetch`. Order is preserved; an exception raised by the source is re-raised by
    ``next()`` at the point in the sequence where it happened, after which the iterator is
    exhausted. `close()` (or leaving a ``with`` block) stops the thread without waiting for
    the source to be used up.
    """

    def __init__(self, source: Iterable[T], size: int) -> None:
        self._items: queue.Queue = queue.Queue(maxsize=size)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(
            target=_produce, args=(iter(source), self._items, self._stop), daemon=True
        )
        self._thread.start()

    def __iter__(self) -> Prefetcher[T]:
        return self

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        item = self._items.get()
        if isinstance(item, _End):
            self._done = True
            raise StopIteration
        if isinstance(item, _Failure):
            self._done = True
            raise item.error
        return item

    def close(self) -> None:
        """Stop the producer and drop any prefetched items; safe to call more than once."""
        self._done = True
        self._stop.set()
        while True:  # unblock a producer waiting on a full queue
            try:
                self._items.get_nowait()
            except queue.Empty:
                break
        # A producer busy inside the source's next() finishes that item first; it is a daemon
        # thread, so a source stuck forever cannot keep the interpreter alive.
        self._thread.join(timeout=_JOIN_S)

    @property
    def running(self) -> bool:
        """Whether the producer thread is still alive."""
        return self._thread.is_alive()

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        self._stop.set()  # a dropped iterator must not leave its thread waiting forever


def prefetch(source: Iterable[T], size: int = 2) -> Prefetcher[T]:
    """Iterate over ``source`` with up to ``size`` items produced ahead in a background thread.

    Args:
      source: any iterable, e.g. a reader's video generator. It is consumed by one background
        thread, so it must not be iterated elsewhere at the same time.
      size: how many finished items may wait in the queue, a positive int.

    Returns:
      A `Prefetcher`: an iterator yielding ``source``'s items in order, with ``close()`` and
      context-manager support for stopping early.

    Raises:
      ValueError: ``size`` is not a positive int.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}; pass e.g. size=2")
    return Prefetcher(source, size)
