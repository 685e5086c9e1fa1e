"""One proxied request: pick the replica, stream the request to it, relay the response.

Owns ``Exchange``. The request head is built once from the parsed parts; request body bytes are
written to the upstream as they arrive (kept for a replay while they total at most
``replay_limit``); response bytes go to the client as they arrive, framed by the upstream
connection's ``ResponseFramer``. A replica that refuses the connection, or a reused keep-alive
connection that closes before any response byte, is retried: a fresh connection to the same
replica for a stale pooled connection, otherwise the key's next replica on the ring. With a
balance factor (bounded loads), a request whose owner is at its load cap goes to the key's first
candidate below the cap instead; a replica's load is its requests in flight plus those waiting
for a new connection to it, counted per replica and in total in ``TrafficStats``.
Must not import: aiohttp, redis, docker.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING
from urllib.parse import unquote_to_bytes

from balancer.hashing import NoReplicasError, Ring
from balancer.hashing.bounded import choose_bounded, load_cap
from balancer.http.framing import DONE, HEAD, UNTIL_CLOSE, FramingError
from balancer.http.upstream import UpstreamConn
from balancer.stats import ReplicaStats
from balancer.wire import no_endpoint_message

if TYPE_CHECKING:
    from balancer.http.client import ClientConn
    from balancer.http.frontend import Frontend

_UNUSED_STATS = ReplicaStats()  # the admin route: counted nowhere
_NONE_TRIED: list[str] = []  # shared, never mutated: an exchange copies before appending


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
        "key",
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
        "started",
        "stats",
        "swallow",
        "tried",
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
        self.tried: list[str] = _NONE_TRIED  # built only when a retry happens
        self.attempts = 0
        self.started = 0.0

    # -- routing ---------------------------------------------------------------------------

    def start(self) -> None:
        """Choose the replica (or the admin app) and send the request."""
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
        if fe.balance_factor:
            name = self._bounded(snapshot.ring, name)
        # The common case, inlined: the chosen replica, over a pooled connection.
        self.name = name
        self.stats = fe.stats.replicas.get(name) or fe.stats.replica(name)
        address = snapshot.addresses[name]
        conn = fe.pool.take(address)
        if conn is not None:
            self._attach(conn)
        else:
            self._connect_later(address)

    def _bounded(self, ring: Ring, owner: str) -> str:
        """The owner, or the member bounded loads send the request to instead."""
        fe = self.fe
        stats = fe.stats
        replicas = stats.replicas
        members = len(ring.members)
        # The common case first, without building the callbacks: the owner is below the cap.
        st = replicas.get(owner)
        if st is None or st.in_flight + st.connecting < load_cap(
            fe.balance_factor, stats.load, members
        ):
            return owner
        key = self.key
        assert key is not None

        def load(name: str) -> int:
            of = replicas.get(name)
            return 0 if of is None else of.in_flight + of.connecting

        def candidates(count: int) -> list[str]:
            return ring.candidates(key, count)

        chosen = choose_bounded(owner, load, stats.load, members, fe.balance_factor, candidates)
        if chosen != owner:
            st.spills += 1
        return chosen

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
        self.fe.stats.load += 1
        self.connecting = asyncio.get_running_loop().create_task(self._connect(address))

    def _connect_done(self) -> None:
        self.connecting = None
        self.stats.connecting -= 1
        self.fe.stats.load -= 1

    async def _connect(self, address: str) -> None:
        try:
            conn = await self.fe.pool.connect(address)
        except (OSError, TimeoutError):
            self._connect_done()
            self._connect_failed()
            return
        self._connect_done()
        if self.client.closed:
            conn.close()
            return
        self._attach(conn)

    def _connect_failed(self) -> None:
        self.stats.errors["connect"] += 1
        if not self.admin and self._retry_next():
            return
        what = "the admin service" if self.admin else f"replica {self.name}"
        self.respond_error(502, f"Could not connect to {what}")

    def _retry_next(self) -> bool:
        """Move to the key's next untried replica; False when there is none to try."""
        if self.attempts >= self.fe.retries:
            return False
        snapshot = self.fe.view.current
        try:
            candidates = snapshot.ring.candidates(self.key, 1 + self.fe.retries)  # type: ignore[arg-type]
        except NoReplicasError:
            return False
        if not self.tried:
            self.tried = [self.name]
        for name in candidates:
            if name not in self.tried:
                self.tried.append(name)
                self.attempts += 1
                self.stats.retries += 1
                self._route_to(name, snapshot.addresses[name])
                return True
        return False

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
        self._keep(b"")
        if self.pending_bytes > 65536:  # connecting: stop reading the client until attached
            self.client.pause_reading(self.client.PAUSE_CONNECTING)

    def _keep(self, data: bytes) -> None:
        if data:
            self.parts.append(data)
        if self.replayable and sum(map(len, self.parts)) > self.fe.replay_limit:
            self.replayable = False
            if self.conn is not None:
                self.parts.clear()

    # -- response direction ----------------------------------------------------------------

    def on_upstream_data(self, data: bytes) -> None:
        conn = self.conn
        assert conn is not None
        framer = conn.framer
        try:
            out = framer.feed(data)
        except FramingError:
            self.stats.errors["protocol"] += 1
            self._detach(close=True)
            self._fail(502, f"Replica {self.name} sent an invalid response")
            return
        if not self.final_head and framer.phase != HEAD:
            self.final_head = True
            if framer.status == 404 and not self.admin:
                self.swallow = True
                self.relayed = True
                self.client.write_error(
                    400, no_endpoint_message(self._path_text()), head_only=self.no_body
                )
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
            if fe.access.rate and fe.access.sampled():  # the status the client got
                self._log_access(400 if self.swallow else status, now - self.started)
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
        conn, self.conn = self.conn, None
        if conn is None:
            return
        self.stats.in_flight -= 1
        self.fe.stats.load -= 1
        if close:
            conn.user = None
            conn.close()
        else:
            self.fe.pool.give_back(conn, self.fe.loop.time())

    def on_upstream_lost(self, conn: UpstreamConn) -> None:
        """The upstream closed while this exchange used it."""
        framer = conn.framer
        self.conn = None
        self.stats.in_flight -= 1
        self.fe.stats.load -= 1
        if framer.phase == UNTIL_CLOSE:  # the close delimits the body: a complete response
            self.keep_alive = False
            if not self.admin:
                duration_s = self.fe.loop.time() - self.started
                self.stats.record(framer.status, duration_s)
                if self.fe.access.rate and self.fe.access.sampled():
                    self._log_access(framer.status, duration_s)
            self.client.exchange_finished(self)
            return
        self.stats.errors["reset"] += 1
        if not self.relayed and self.replayable and self.parts:
            if conn.reused and self.attempts < self.fe.retries + 1:
                # A pooled connection the replica had already closed: same replica, new socket.
                self.attempts += 1
                self.stats.retries += 1
                self._connect_later(conn.address)
                return
            if not self.admin and self._retry_next():
                return
        self._fail(502, f"Replica {self.name} closed the connection")

    def on_upstream_pause(self, paused: bool) -> None:
        if paused:
            self.client.pause_reading(self.client.PAUSE_UPSTREAM)
        else:
            self.client.resume_reading(self.client.PAUSE_UPSTREAM)

    def timed_out(self) -> None:
        """Called by the sweeper when the upstream took longer than the upstream timeout."""
        self.stats.errors["timeout"] += 1
        self._detach(close=True)
        self._fail(504, f"Replica {self.name} timed out")

    def _fail(self, status: int, message: str) -> None:
        if self.relayed:  # part of a response already went out: only closing can signal it
            self.keep_alive = False
            self.client.exchange_finished(self)
            self.client.transport.close()
        else:
            self.respond_error(status, message)

    def respond_error(self, status: int, message: str) -> None:
        self.relayed = True
        self.fe.stats.client_error(status)
        self.client.write_error(status, message, head_only=self.no_body)
        if self.fe.access.rate and self.fe.access.sampled():
            self._log_access(status, None)
        self.client.exchange_finished(self)

    def abandon(self) -> None:
        """The client went away: stop whatever is under way."""
        if self.connecting is not None:
            self.connecting.cancel()  # it may not have started: its own bookkeeping may not run
            self._connect_done()
        self._detach(close=True)

    def _path_text(self) -> str:
        return unquote_to_bytes(self.path.split(b"?", 1)[0]).decode("utf-8", "replace")

    @property
    def in_flight_since(self) -> float | None:
        return self.started if self.conn is not None else None
