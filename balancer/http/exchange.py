"""One proxied request: pick the replica, stream the request to it, relay the response.

Owns ``Exchange``. The request head is built once from the parsed parts; request body bytes are
written to the upstream as they arrive (kept for a replay while they total at most
``replay_limit``); response bytes go to the client as they arrive, framed by the upstream
connection's ``ResponseFramer``.

Where each attempt goes, whether a failed one goes again, and what is reported to outlier
detection is decided in ``balancer.http.choice`` (one walk over the key's candidates per attempt,
on the snapshot's picker). One replay is decided here, for any method: a pooled keep-alive
connection that the replica closes before any response byte (it had closed it while idle: the
usual keep-alive race) is replayed once on a fresh connection to the same replica.
Must not import: aiohttp, redis, docker.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING
from urllib.parse import unquote_to_bytes

from balancer.hashing import NoReplicasError
from balancer.http.choice import (
    Retries,
    first_choice,
    report_answer,
    report_failure,
    retry_allowed,
)
from balancer.http.framing import DONE, HEAD, UNTIL_CLOSE, FramingError
from balancer.http.stats import ReplicaStats
from balancer.http.upstream import UpstreamConn, local_failure
from balancer.wire import no_endpoint_message

if TYPE_CHECKING:
    from balancer.http.client import ClientConn
    from balancer.http.frontend import Frontend

_UNUSED_STATS = ReplicaStats()  # the admin route: counted nowhere


class Exchange:
    __slots__ = (
        "admin",
        "attempts",
        "chunked",
        "client",
        "conn",
        "connecting",
        "fe",
        "final_head",
        "http10",
        "keep_alive",
        "kept",
        "key",
        "launched",
        "method",
        "name",
        "no_body",
        "parts",
        "path",
        "pending_bytes",
        "relayed",
        "replayable",
        "request_done",
        "response_done",
        "retry",
        "started",
        "stats",
        "swallow",
        "t0",
    )

    def __init__(
        self,
        client: ClientConn,
        head: bytes,
        method: bytes,
        path: bytes,
        key: str | None,
        keep_alive: bool,
        no_body: bool,
        http10: bool,
        chunked: bool,
    ) -> None:
        self.client = client
        self.fe: Frontend = client.fe
        self.parts = [head]  # what the upstream must receive (for a replay as well)
        self.kept = len(head)  # bytes in parts: a running total, O(1) per body piece
        self.method = method
        self.pending_bytes = 0  # body bytes buffered while no connection is attached
        self.path = path
        self.key = key
        self.admin = key is None
        self.keep_alive = keep_alive
        self.no_body = no_body
        self.http10 = http10
        self.chunked = chunked
        self.replayable = True
        self.request_done = False
        self.response_done = False
        self.relayed = False  # some response bytes went to the client (no retry, no error page)
        self.final_head = False  # the final (non-1xx) response head has arrived
        self.swallow = False
        self.conn: UpstreamConn | None = None
        self.connecting: asyncio.Task[None] | None = None
        self.name = ""
        self.stats = _UNUSED_STATS
        self.retry: Retries | None = None  # made when a failed attempt may go again
        self.attempts = 0
        self.started = 0.0  # when the current attempt's request went out
        self.t0 = 0.0  # the request's start, for the retry time budget (set when first needed)
        self.launched = False  # start() was called

    # -- routing ---------------------------------------------------------------------------

    def start(self) -> None:
        """Choose the replica (or the admin app) and send the request."""
        self.launched = True
        self.client.progress += 1  # its stall is counted from now, not from an idle spell
        if self.admin:
            self._use(self.fe.admin_address)
            return
        fe = self.fe
        snapshot = fe.view.current
        try:
            name = snapshot.ring.lookup(self.key)  # type: ignore[arg-type]
        except NoReplicasError:
            fe.stats.no_replica += 1
            self.respond_error(503, "No replicas available")
            return
        if fe.ejected or fe.balance_factor:  # the owner may be turned down: walk the candidates
            key = self.key
            assert key is not None
            name = first_choice(snapshot.picker, key, name, fe.outlier, fe.stats, fe.balance_factor)
        # The common case, inlined: the chosen replica, over a pooled connection.
        self.name = name
        self.stats = fe.stats.replicas.get(name) or fe.stats.replica(name)
        address = snapshot.addresses[name]
        conn = fe.pool.take(address)
        if conn is not None:
            self._attach(conn)
        else:
            self._connect_later(address)

    def _route_to(self, name: str, address: str) -> None:
        self.name = name
        self.stats = self.fe.stats.replica(name)
        self._use(address)

    def _use(self, address: str) -> None:
        conn = self.fe.pool.take(address)
        if conn is not None:
            self._attach(conn)
        else:
            self._connect_later(address)

    def _connect_later(self, address: str) -> None:
        """Open a new connection to the current replica; it counts as load until it is up."""
        self.stats.connecting += 1
        fe = self.fe
        fe.stats.load += 1
        if not self.t0:  # the first attempt: the request starts now
            self.t0 = fe.loop.time()
        self.connecting = fe.loop.create_task(self._connect(address))

    def _connect_done(self) -> None:
        self.connecting = None
        self.stats.connecting -= 1
        self.fe.stats.load -= 1

    async def _connect(self, address: str) -> None:
        try:
            conn = await self.fe.pool.connect(address)
        except (OSError, TimeoutError) as exc:
            self._connect_done()
            if local_failure(exc):  # out of descriptors: not the replica's failure
                self.respond_error(503, "The balancer is out of resources")
                return
            self._connect_failed()
            return
        self._connect_done()
        if self.client.closed:
            conn.close()
            return
        self._attach(conn)

    def _connect_failed(self) -> None:
        self.stats.errors["connect"] += 1
        if self.admin:
            self.respond_error(502, "Could not connect to the admin service")
            return
        report_failure(self.fe, self.name, self.stats)
        if self.fe.retry_on_connect:
            name = self._retry_choice(sent=False)  # nothing was sent: any method may go again
            if name is not None:
                self._retry_to(name)
                return
        self.respond_error(502, f"Could not connect to replica {self.name}")

    # -- retries ---------------------------------------------------------------------------

    def _retry_choice(self, *, sent: bool, answered: bool = False) -> str | None:
        """The replica to retry the failed attempt on, or None: answer the failure.

        ``sent``: bytes of the request reached the failed replica (see the module docstring for
        what may be retried then); ``answered``: it answered (a 5xx), so the retry budget
        applies. Frees this request's budget slot: its retry attempt (if it was one) is over.
        """
        retry = self.retry
        if retry is not None:
            retry.release()
        fe = self.fe
        replay = self.replayable and bool(self.parts)
        if self.admin or self.relayed:
            return None
        if not retry_allowed(fe, self.method, sent=sent, replay=replay, attempts=self.attempts):
            return None
        if retry is None:
            assert self.key is not None
            retry = self.retry = Retries(fe, self.key, self.name)
        return retry.target(self._request_start(), answered=answered)

    def _retry_to(self, name: str) -> None:
        """Send the request to ``name`` (chosen by ``_retry_choice``; no connection attached)."""
        assert self.retry is not None
        self.retry.begin(name)
        self.attempts += 1
        self.stats.retries += 1  # on the replica retried away from
        self.final_head = False
        self._route_to(name, self.fe.view.current.addresses[name])

    def _request_start(self) -> float:
        if not self.t0:  # the first attempt went out at once, on a pooled connection
            self.t0 = self.started
        return self.t0

    def _finished(self) -> None:
        if self.retry is not None:
            self.retry.release()
        self.client.exchange_finished(self)

    def _gateway_error(self, status: int) -> bool:
        """The replica answered one of ``fe.error_statuses`` (the head is complete, nothing
        relayed yet): count it if ejection does; True when the request went to another replica
        instead of relaying that answer (a status ``retry_on`` retries)."""
        fe = self.fe
        if status in fe.eject_statuses:
            report_failure(fe, self.name, self.stats)
        if status not in fe.retry_statuses:
            return False
        name = self._retry_choice(sent=True, answered=True)
        if name is None:
            return False
        self.stats.record(status, fe.loop.time() - self.started)  # answered, though not relayed
        self._detach(close=True)  # the rest of that answer is not wanted
        self._retry_to(name)
        return True

    # -- request direction -----------------------------------------------------------------

    def _attach(self, conn: UpstreamConn) -> None:
        self.conn = conn
        conn.user = self
        conn.framer.reset(self.no_body, self.http10)
        self.stats.in_flight += 1
        fe = self.fe
        fe.stats.load += 1
        self.started = fe.loop.time()
        transport = conn.transport
        assert transport is not None
        transport.writelines(self.parts) if len(self.parts) > 1 else transport.write(self.parts[0])
        if not self.replayable:
            self.parts.clear()
        if self.pending_bytes:
            self.pending_bytes = 0
            self.client.resume_reading(self.client.PAUSE_CONNECTING)
        if self.client.write_paused:
            transport.pause_reading()

    def send_body(self, data: bytes) -> None:
        """Request body bytes (already framed for the upstream)."""
        if self.response_done:
            return  # answered early (an error, or the replica did not wait): discard the rest
        conn = self.conn
        if conn is not None and conn.transport is not None:
            conn.transport.write(data)
            if self.replayable:
                self._keep(data)
            return
        self.parts.append(data)
        self.pending_bytes += len(data)
        self.kept += len(data)
        self._keep(b"")
        if self.pending_bytes > 65536:  # connecting: stop reading the client until attached
            self.client.pause_reading(self.client.PAUSE_CONNECTING)

    def _keep(self, data: bytes) -> None:
        if data:
            self.parts.append(data)
            self.kept += len(data)
        if self.replayable and self.kept > self.fe.replay_limit:
            self.replayable = False
            if self.conn is not None:
                self.parts.clear()

    # -- response direction ----------------------------------------------------------------

    def on_upstream_data(self, data: bytes) -> None:
        conn = self.conn
        assert conn is not None
        self.client.progress += 1
        framer = conn.framer
        try:
            out = framer.feed(data)
        except FramingError:
            self.stats.errors["protocol"] += 1
            if not self.admin:
                report_failure(self.fe, self.name, self.stats)
            self._detach(close=True)
            self._fail(502, f"Replica {self.name} sent an invalid response")
            return
        if not self.final_head and framer.phase != HEAD:
            self.final_head = True
            status = framer.status
            if status >= 404 and not self.admin:
                if status == 404:
                    self.swallow = True
                    self.relayed = True
                    self.client.write_error(
                        400, no_endpoint_message(self._path_text()), head_only=self.no_body
                    )
                elif status in self.fe.error_statuses and self._gateway_error(status):
                    return  # retried elsewhere: this answer is dropped
        if out:
            self.relayed = True
        if out and not self.swallow:
            self.client.transport.write(out)
        if framer.phase == DONE:
            self._complete(framer.status)

    def _complete(self, status: int) -> None:
        conn = self.conn
        assert conn is not None
        self.conn = None
        fe = self.fe
        now = fe.loop.time()
        stats = self.stats
        stats.in_flight -= 1
        fe.stats.load -= 1
        framer = conn.framer
        if framer.reusable and self.request_done and not framer.extra:
            fe.pool.give_back(conn, now)
        else:
            conn.user = None
            conn.close()
        if not self.admin:
            stats.record(status, now - self.started)
            if fe.failing:
                report_answer(fe, self.name, status)
            if fe.access.rate and fe.access.sampled():  # the status the client got
                self._log_access(400 if self.swallow else status, now - self.started)
        if self.retry is not None:
            self.retry.release()
        self.client.exchange_finished(self)

    def _log_access(self, status: int, duration_s: float | None) -> None:
        self.fe.access.record(
            client=self.client.peer,
            method=self.method,
            target=self.path,
            replica=self.name or "-",
            status=status,
            duration_s=duration_s,
            retries=self.attempts,
        )

    def _detach(self, *, close: bool) -> None:
        """Let go of the upstream connection: back to the pool, or closed; closed with a reset
        while the request is incomplete, so the replica never takes a part for the whole."""
        conn, self.conn = self.conn, None
        if conn is None:
            return
        self.stats.in_flight -= 1
        self.fe.stats.load -= 1
        if close:
            conn.user = None
            conn.close() if self.request_done else conn.abort()
        else:
            self.fe.pool.give_back(conn, self.fe.loop.time())

    def on_upstream_lost(self, conn: UpstreamConn) -> None:
        """The upstream closed while this exchange used it."""
        framer = conn.framer
        self.conn = None
        self.stats.in_flight -= 1
        self.fe.stats.load -= 1
        if framer.phase == UNTIL_CLOSE and not conn.reset:  # the close delimits the body
            self.keep_alive = False
            if not self.admin:
                duration_s = self.fe.loop.time() - self.started
                self.stats.record(framer.status, duration_s)
                report_answer(self.fe, self.name, framer.status)
                if self.fe.access.rate and self.fe.access.sampled():
                    self._log_access(framer.status, duration_s)
            self._finished()
            return
        self.stats.errors["reset"] += 1
        if (
            conn.reused
            and not self.relayed
            and self.replayable
            and self.parts
            and self.attempts < self.fe.retries + 1
        ):
            # A pooled connection the replica had already closed: same replica, new socket.
            # Not a failure of the replica, and replayed for any method (module docstring).
            self._request_start()
            self.attempts += 1
            self.stats.retries += 1
            self._connect_later(conn.address)
            return
        if not self.admin:
            report_failure(self.fe, self.name, self.stats)
            if self.fe.retry_on_reset:
                name = self._retry_choice(sent=True)
                if name is not None:
                    self._retry_to(name)
                    return
        self._fail(502, f"Replica {self.name} closed the connection")

    def on_upstream_pause(self, paused: bool) -> None:
        if paused:
            self.client.pause_reading(self.client.PAUSE_UPSTREAM)
        else:
            self.client.resume_reading(self.client.PAUSE_UPSTREAM)

    def timed_out(self) -> None:
        """Called by the sweeper: the replica moved no byte for the upstream timeout (or the
        optional total timeout passed)."""
        self.stats.errors["timeout"] += 1
        if not self.admin:
            report_failure(self.fe, self.name, self.stats)
        if not self.request_done:  # the rest of the body has nowhere to go: close after the 504
            self.keep_alive = False
        self._detach(close=True)
        self._fail(504, f"Replica {self.name} timed out")

    def _fail(self, status: int, message: str) -> None:
        if self.relayed:  # part of a response already went out: a reset says it is cut short
            self.keep_alive = False
            self.client.reset()
            self._finished()
        else:
            self.respond_error(status, message)

    def respond_error(self, status: int, message: str) -> None:
        self.relayed = True
        self.fe.stats.client_error(status)
        self.client.write_error(status, message, head_only=self.no_body)
        if self.fe.access.rate and self.fe.access.sampled():
            self._log_access(status, None)
        self._finished()

    def abandon(self) -> None:
        """The client went away, or its request turned out malformed or too slow: stop what is
        under way (an incomplete request ends in a reset at the replica, see ``_detach``)."""
        if self.connecting is not None:
            self.connecting.cancel()  # it may not have started: its own bookkeeping may not run
            self._connect_done()
        self._detach(close=True)
        if self.retry is not None:
            self.retry.release()

    def _path_text(self) -> str:
        return unquote_to_bytes(self.path.split(b"?", 1)[0]).decode("utf-8", "replace")
