"""The MLLP listener: HL7 v2 messages framed ``0x0B <message> 0x1C 0x0D`` over TCP (or TLS).

Each connection is read by its own task; each message is stored in a worker thread (the
database work is blocking), so one slow message never holds up another connection, while the
messages of one connection are handled strictly one after another, in the order sent (HL7's
original-mode ordering: the sender waits for each ACK). Bytes outside a frame are skipped, a
frame left open when the peer disconnects is dropped unacknowledged (the sender never got an
ACK, so it resends), and an oversized frame closes the connection.

Senders are authenticated by mutual TLS: the listener asks for a client certificate (issued by
the CA given as ``client_ca``), and maps it to the registered system client it is bound to. A
connection without one, or with one bound to no client, or to a revoked client, gets AR with an
ERR saying so for every message it sends, nothing of which is kept; each refusal is audited. A
handshake that fails (a certificate the CA did not issue, an expired one) is audited too. Without
client certificates the listener does not start unless it is told the network itself is trusted
(``trusted_client``: every connection is that client — for a closed lab network only).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from yilian.db import Database
from yilian.db.uow import transact
from yilian.exchange import senders
from yilian.exchange.intake import IntakeSettings, Outcome, receive, refuse
from yilian.exchange.senders import Peer
from yilian.exchange.stranded import recover
from yilian.kernel.errors import Category, YilianError
from yilian.security.audit import AuditRecord
from yilian.security.audit import record as audit_record

log = logging.getLogger("yilian.exchange.mllp")

START = b"\x0b"
END = b"\x1c\x0d"
MAX_FRAME = 16 * 1024 * 1024  # a message larger than this is not an HL7 v2 message we accept


def frame(payload: bytes) -> bytes:
    return START + payload + END


def tls_context(cert: str, key: str, client_ca: str | None = None) -> ssl.SSLContext:
    """The listener's TLS: its certificate, and with ``client_ca`` the CA whose client
    certificates it asks for (mutual TLS). Only that CA is trusted for clients, never the
    system's store."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
        if client_ca is not None:
            ctx.load_verify_locations(cafile=client_ca)
    except (OSError, ssl.SSLError) as exc:
        raise YilianError(Category.INVALID, f"cannot load the TLS files: {exc}") from None
    if client_ca is not None:
        # OPTIONAL, not REQUIRED: a connection without a certificate still completes the
        # handshake, so its sender is told why it is refused (AR) and the refusal is audited.
        # A certificate that does not verify against client_ca still fails the handshake.
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def authenticates_clients(ctx: ssl.SSLContext | None) -> bool:
    return ctx is not None and ctx.verify_mode != ssl.CERT_NONE


@dataclass
class MllpServer:
    """``await server.start()`` then ``await server.serve_forever()`` (or use ``async with``)."""

    db: Database
    settings: IntakeSettings
    host: str = "127.0.0.1"
    port: int = 2575
    ssl_context: ssl.SSLContext | None = None
    workers: int = 8
    # The insecure mode (no client certificates): every connection is this client.
    trusted_client: str | None = None
    # How often the listener looks for messages a crashed process left landed but unprocessed
    # (exchange/stranded.py); 0 turns it off.
    recover_every_s: float = 60.0
    _trusted: Peer | None = field(default=None, init=False)
    _sweeper: asyncio.Task[None] | None = field(default=None, init=False)
    _server: asyncio.Server | None = field(default=None, init=False)
    _pool: ThreadPoolExecutor | None = field(default=None, init=False)
    _connections: set[asyncio.Task[None]] = field(default_factory=set, init=False)

    def _handle(self, payload: bytes, peer: str, sender: Peer) -> Outcome:
        if sender.client_id is None or sender.refusal is not None:
            return refuse(
                self.db, payload, reason=sender.refusal or "unknown sender", agent=sender.agent, peer=peer
            )
        return receive(self.db, payload, settings=self.settings, client_id=sender.client_id, peer=peer)

    def check_mode(self) -> None:
        """Refuse to start without a way to know who sends (issue 5: no data without authentication)."""
        mtls = authenticates_clients(self.ssl_context)
        if mtls and self.trusted_client is not None:
            raise YilianError(
                Category.INVALID,
                "client certificates and a trusted client exclude each other: with mutual TLS each "
                "connection is the client its certificate is bound to",
            )
        if not mtls and self.trusted_client is None:
            raise YilianError(
                Category.INVALID,
                "the MLLP listener must authenticate its senders: give --tls-cert, --tls-key and "
                "--tls-client-ca (mutual TLS), or, on a closed lab network only, "
                "--insecure-trust-network --as-client CLIENT_ID",
            )
        if self.trusted_client is not None:
            self._trusted = senders.trusted(self.db, self.trusted_client)

    @property
    def bound_port(self) -> int:
        assert self._server is not None and self._server.sockets
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self.check_mode()
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="mllp")
        # TLS is started by each connection itself (see _connection), so that a handshake that
        # fails is seen, and audited, rather than dropped silently inside asyncio.
        self._server = await asyncio.start_server(self._connection, self.host, self.port, limit=MAX_FRAME)
        if self.recover_every_s > 0:
            self._sweeper = asyncio.create_task(self._sweep(), name="mllp-recover")

    async def _sweep(self) -> None:
        """Process stranded messages now (a restart after a crash finds them) and then every
        ``recover_every_s`` seconds, in the intake's own threads."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                done = await loop.run_in_executor(self._pool, self._recover)
                if done:
                    log.warning("processed %d HL7 message(s) left landed but unprocessed", done)
            except Exception:
                log.exception("recovering stranded HL7 messages failed; trying again later")
            await asyncio.sleep(self.recover_every_s)

    def _recover(self) -> int:
        return len([r for r in recover(self.db, settings=self.settings) if r.outcome is not None])

    async def serve_forever(self) -> None:
        if self._server is None:
            await self.start()
        assert self._server is not None
        async with self._server:
            await self._server.serve_forever()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._sweeper
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
            if self.ssl_context is not None:
                # Nothing may be awaited before this: the TLS protocol must take over the socket
                # before the first bytes of the ClientHello are read as plain data.
                try:
                    await writer.start_tls(self.ssl_context, ssl_handshake_timeout=30)
                except (ssl.SSLEOFError, ssl.SSLZeroReturnError) as exc:
                    # The peer went away mid-handshake (a port probe, a health check): no denial.
                    log.info("MLLP connection from %s closed in the TLS handshake: %s", peer, exc)
                    return
                except ssl.SSLError as exc:
                    await loop.run_in_executor(self._pool, self._deny_handshake, peer, exc)
                    return
            sender = self._trusted
            if sender is None:
                ssl_object = writer.get_extra_info("ssl_object")
                der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
                sender = await loop.run_in_executor(self._pool, senders.by_certificate, self.db, der)
            if sender.refusal is not None:
                log.warning("MLLP connection from %s refused: %s", peer, sender.refusal)
            while True:
                payload = await read_frame(reader)
                if payload is None:
                    break
                outcome = await loop.run_in_executor(self._pool, self._handle, payload, peer, sender)
                writer.write(frame(outcome.ack))
                await writer.drain()
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
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

    def _deny_handshake(self, peer: str, exc: ssl.SSLError) -> None:
        reason = getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or str(exc)
        log.warning("MLLP connection from %s refused in the TLS handshake: %s", peer, reason)
        rec = AuditRecord(
            action="E",
            subtype="access-denied",
            agent_kind="system",
            agent_id="unauthenticated",
            outcome=4,
            entity="HL7v2 MLLP connection",
            source_ip=peer.rsplit(":", 1)[0][:64],
            outcome_desc=f"TLS handshake refused: {reason}"[:500],
        )
        try:
            transact(self.db, lambda uow: audit_record(uow, rec))
        except Exception:
            log.exception("could not record a refused MLLP connection in the audit log")


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
