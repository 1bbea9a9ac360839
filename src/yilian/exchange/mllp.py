"""The MLLP listener: HL7 v2 messages framed ``0x0B <message> 0x1C 0x0D`` over TCP (or TLS).

Each connection is read by its own task; each message is stored in a worker thread (the
database work is blocking), so one slow message never holds up another connection, while the
messages of one connection are handled strictly one after another, in the order sent (HL7's
original-mode ordering: the sender waits for each ACK). Bytes outside a frame are skipped, a
frame left open when the peer disconnects is dropped unacknowledged (the sender never got an
ACK, so it resends), and an oversized frame closes the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from yilian.db import Database
from yilian.exchange.intake import IntakeSettings, Outcome, receive

log = logging.getLogger("yilian.exchange.mllp")

START = b"\x0b"
END = b"\x1c\x0d"
MAX_FRAME = 16 * 1024 * 1024  # a message larger than this is not an HL7 v2 message we accept


def frame(payload: bytes) -> bytes:
    return START + payload + END


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


@dataclass
class MllpServer:
    """``await server.start()`` then ``await server.serve_forever()`` (or use ``async with``)."""

    db: Database
    settings: IntakeSettings
    host: str = "127.0.0.1"
    port: int = 2575
    ssl_context: ssl.SSLContext | None = None
    workers: int = 8
    handler: Callable[[bytes, str], Outcome] | None = None
    _server: asyncio.Server | None = field(default=None, init=False)
    _pool: ThreadPoolExecutor | None = field(default=None, init=False)
    _connections: set[asyncio.Task[None]] = field(default_factory=set, init=False)

    def _handle(self, payload: bytes, peer: str) -> Outcome:
        if self.handler is not None:
            return self.handler(payload, peer)
        return receive(self.db, payload, settings=self.settings, peer=peer)

    @property
    def bound_port(self) -> int:
        assert self._server is not None and self._server.sockets
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="mllp")
        self._server = await asyncio.start_server(
            self._connection, self.host, self.port, ssl=self.ssl_context, limit=MAX_FRAME
        )

    async def serve_forever(self) -> None:
        if self._server is None:
            await self.start()
        assert self._server is not None
        async with self._server:
            await self._server.serve_forever()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    async def __aenter__(self) -> MllpServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        peername = writer.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else str(peername)
        loop = asyncio.get_running_loop()
        try:
            while True:
                payload = await read_frame(reader)
                if payload is None:
                    break
                outcome = await loop.run_in_executor(self._pool, self._handle, payload, peer)
                writer.write(frame(outcome.ack))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
            log.info("MLLP connection from %s ended: %s", peer, exc)
        except FrameTooLarge:
            log.warning("MLLP connection from %s sent a frame over %d bytes; closed", peer, MAX_FRAME)
        except Exception:
            # The message could not even be landed (the database is down): close without an
            # ACK, so the sender keeps the message and sends it again, rather than an AE that
            # many senders take as final.
            log.exception("MLLP message from %s could not be received; connection closed without ACK", peer)
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class FrameTooLarge(Exception):
    pass


async def read_frame(reader: asyncio.StreamReader) -> bytes | None:
    """The next framed message; None at a clean end of stream (or one inside an unfinished frame)."""
    while True:
        # Skip anything before the start byte: keep-alive newlines, garbage, a previous
        # frame's stray trailer.
        byte = await reader.read(1)
        if not byte:
            return None
        if byte == START:
            break
    try:
        data = await reader.readuntil(END)
    except asyncio.IncompleteReadError:
        return None  # the peer went away mid-frame: it got no ACK and will resend
    except asyncio.LimitOverrunError:
        raise FrameTooLarge() from None
    payload = data[: -len(END)]
    if START in payload:
        # A new frame began before this one ended: the earlier bytes were a broken frame.
        payload = payload[payload.rindex(START) + 1 :]
    return payload


def run(server: MllpServer) -> None:
    """Run the listener until interrupted (``yilian mllp``)."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(server.serve_forever())
