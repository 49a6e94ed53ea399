"""The server's coalescing transport: the writes of one loop iteration leave in one write."""

from __future__ import annotations

import asyncio

import pytest

from shop.kernel.server import COALESCE_BYTES, CoalescingTransport

pytestmark = pytest.mark.anyio


class Recording(asyncio.Transport):
    """A transport that keeps what it was asked to write, and whether it was closed."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False
        self.eof = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def write_eof(self) -> None:
        self.eof = True

    def get_write_buffer_size(self) -> int:
        return 7


async def test_the_writes_of_one_iteration_leave_together() -> None:
    inner = Recording()
    outer = CoalescingTransport(inner, asyncio.get_running_loop())
    outer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    outer.write(b"ok")
    assert inner.writes == []
    assert outer.get_write_buffer_size() == 7 + 40
    await asyncio.sleep(0)  # the loop's next callbacks
    assert inner.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]
    outer.write(b"next")
    await asyncio.sleep(0)
    assert inner.writes[1:] == [b"next"]


async def test_a_large_body_is_not_held() -> None:
    inner = Recording()
    outer = CoalescingTransport(inner, asyncio.get_running_loop())
    outer.write(b"head")
    outer.write(b"x" * COALESCE_BYTES)
    assert inner.writes == [b"head" + b"x" * COALESCE_BYTES]
    await asyncio.sleep(0)
    assert len(inner.writes) == 1  # nothing left for the scheduled flush


async def test_close_and_end_of_writing_send_what_is_held_first() -> None:
    inner = Recording()
    outer = CoalescingTransport(inner, asyncio.get_running_loop())
    outer.write(b"last words")
    outer.close()
    assert (inner.writes, inner.closed) == ([b"last words"], True)
    await asyncio.sleep(0)
    assert inner.writes == [b"last words"]  # sent once

    inner = Recording()
    outer = CoalescingTransport(inner, asyncio.get_running_loop())
    outer.writelines([b"a", b"b"])
    outer.write_eof()
    assert (inner.writes, inner.eof) == ([b"ab"], True)


async def test_abort_drops_what_is_held_and_a_closed_transport_gets_nothing() -> None:
    inner = Recording()
    outer = CoalescingTransport(inner, asyncio.get_running_loop())
    outer.write(b"never")
    outer.abort()
    await asyncio.sleep(0)
    assert (inner.writes, inner.aborted) == ([], True)

    inner = Recording()
    outer = CoalescingTransport(inner, asyncio.get_running_loop())
    outer.write(b"too late")
    inner.closed = True  # the peer went away meanwhile
    await asyncio.sleep(0)
    assert inner.writes == []


async def test_everything_else_is_the_wrapped_transports() -> None:
    inner = Recording()
    outer = CoalescingTransport(inner, asyncio.get_running_loop())
    assert outer.is_closing() is False
    inner.close()
    assert outer.is_closing() is True
