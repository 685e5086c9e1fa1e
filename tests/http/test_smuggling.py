"""Request smuggling and framing: the replica receives exactly the requests the balancer
answered, one for one, with the same framing, and nothing else.

Every payload of ``smuggling_corpus.CORPUS`` goes raw over one client connection to a balancer
whose one replica is a ``RecordingBackend`` (every byte it receives, parsed by h11 plus the
strict head checks of ``head_problems``). Then, per payload: the backend's complete requests are
exactly the ones the client got a backend answer for, in order, each the request the client
meant (method, origin-form target, one Host, body, one X-Forwarded-For ending in the client's
address), without a framing violation; requests the balancer answered itself produced nothing
at the backend, and no bytes are left there past the last complete request (a request whose
malformed body arrived after its head went upstream may end there incomplete, cut off).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from dataclasses import dataclass, field

import pytest

from tests.conftest import BalancerFactory
from tests.http.conftest import raw_balancer
from tests.http.recording_backend import MARKER, RecordingBackend, Seen, head_problems
from tests.http.smuggling_cases import Case, Sent, Write
from tests.http.smuggling_corpus import CORPUS
from tests.http.wire import Client, Response, read_response

FIRST_ANSWER_S = 1.0  # for an answer the client is owed
MORE_ANSWERS_S = 0.05  # for answers beyond those (a late one is waited for if the backend saw more)
BYTE_GAP_S = 0.002  # between the writes of a split payload, so each is its own read
# A keyed hash's secret seed: only worker processes may read it (GET /lb/membership).
SECRET_SEED = "12345678901234567890"
BALANCER = {"hash_name": "siphash", "hash_seed": int(SECRET_SEED)}

RUNS = [pytest.param(c, None, id=c.id) for c in CORPUS] + [
    pytest.param(c, w, id=f"{c.id}@{w}") for c in CORPUS for w in c.writes
]


@dataclass
class Conversation:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    responses: list[Response] = field(default_factory=list)
    ending: str = "open"  # how it ended: closed, reset, timeout, or an unparsable answer


async def warm_up(port: int, backend: RecordingBackend) -> None:
    """One request first, so that the balancer holds an idle upstream connection, as it does
    in production: a head it forwards then reaches the backend at once, not after a connect."""
    async with await Client.open(port) as client:
        resp = await client.request("GET", "/warm-up")
        assert from_backend(resp), resp
    await backend.settle()


def pieces(payload: bytes, write: Write | None) -> list[bytes]:
    if write is None:
        return [payload]
    if write == "bytes":
        return [payload[i : i + 1] for i in range(len(payload))]
    if write == "lines":
        return payload.splitlines(keepends=True)
    head_end = payload.find(b"\r\n\r\n") + 4
    return [payload[:head_end], payload[head_end:]] if head_end > 3 else [payload]


def from_backend(resp: Response) -> bool:
    return resp.has(MARKER)


async def converse(port: int, case: Case, write: Write | None) -> Conversation:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        for piece in pieces(case.payload, write):
            writer.write(piece)
            await writer.drain()
            if write is not None:
                await asyncio.sleep(BYTE_GAP_S)
    except ConnectionError:
        pass  # the balancer answered and closed before the rest: reading tells what it said
    talk = Conversation(reader, writer)
    await read_more(talk, case.sent)
    return talk


async def read_more(talk: Conversation, sent: tuple[Sent, ...], late: bool = False) -> None:
    """Answers until the balancer closes, or none comes in time (longer for an answer owed)."""
    while talk.ending in ("open", "timeout"):
        index = len(talk.responses)
        head = index < len(sent) and sent[index].method == "HEAD"
        limit_s = FIRST_ANSWER_S if late or index < len(sent) else MORE_ANSWERS_S
        try:
            resp = await read_response(talk.reader, head_request=head, limit_s=limit_s)
            talk.responses.append(resp)
            talk.ending = "open"
        except TimeoutError:
            talk.ending = "timeout"
            return
        except asyncio.IncompleteReadError as exc:
            talk.ending = f"truncated after {exc.partial!r}" if exc.partial else "closed"
        except ConnectionError:
            talk.ending = "reset"
        except (AssertionError, ValueError) as exc:
            talk.ending = f"unparsable answer: {exc}"


def describe(talk: Conversation, backend: RecordingBackend) -> str:
    got = [f"{r.status} {r.get(MARKER) or 'balancer'} {r.body[:120]!r}" for r in talk.responses]
    conns = [
        f"conn {c.id}: {len(c.requests)} requests, partial={c.partial is not None}, "
        f"violation={c.violation}, raw={bytes(c.raw[c.mark :])[:600]!r}"
        for c in backend.conns
        if not c.heartbeats_only
    ]
    return f"client got {got} then {talk.ending}; backend: {conns or 'nothing'}"


def request_problems(sent: Sent, seen: Seen) -> list[str]:
    problems = [f"#{seen.seq} {p}" for p in head_problems(seen.head)]
    if seen.target[:1] != "/" and (seen.target, seen.method) != ("*", "OPTIONS"):
        problems.append(f"#{seen.seq} target not in origin-form: {seen.target!r}")
    want = (sent.method, sent.target, sent.body)
    got = (seen.method, seen.target, seen.body)
    if got != want:
        problems.append(f"#{seen.seq} backend saw {got!r}, the client sent {want!r}")
    hosts = seen.all("host")
    if sent.host is not None and hosts != [sent.host]:
        problems.append(f"#{seen.seq} Host {hosts} instead of {sent.host!r}")
    if seen.all("x-forwarded-for") not in ([x] for x in sent.xff):
        problems.append(f"#{seen.seq} X-Forwarded-For {seen.all('x-forwarded-for')}")
    if sent.route == "admin":
        problems.append(f"#{seen.seq} an admin request reached the backend")
    return problems


def balancer_answer_problems(j: int, sent: Sent | None, resp: Response) -> list[str]:
    problems = []
    if SECRET_SEED.encode() in resp.body:
        problems.append(f"answer {j} carries the hash seed: {resp.body[:200]!r}")
    if resp.status == 101:
        problems.append(f"answer {j} switched protocols")
    if resp.status >= 400 and resp.body:
        shape = json.loads(resp.body)
        if set(shape) != {"message", "status"} or shape["status"] != "failure":
            problems.append(f"answer {j} not in the contract's error shape: {resp.body!r}")
    if sent is not None and sent.route == "not-admin" and resp.status < 400:
        problems.append(f"answer {j} served by the admin app: {resp.body[:200]!r}")
    return problems


def answers_problems(case: Case, talk: Conversation) -> tuple[list[str], dict[int, int]]:
    """Problems of the client's answers, and which answer each backend sequence number got."""
    problems: list[str] = []
    answered: dict[int, int] = {}  # backend seq -> index of the answer that names it
    for j, resp in enumerate(talk.responses):
        sent = case.sent[j] if j < len(case.sent) else None
        marker = resp.get(MARKER)
        if marker is not None and marker.isdigit():
            answered[int(marker)] = j
        if marker is not None and sent is None:
            problems.append(f"answer {j} from the backend ({marker}) to no request sent")
        elif marker is None:
            problems += balancer_answer_problems(j, sent, resp)
            if sent is None and resp.status < 400:
                problems.append(f"answer {j} ({resp.status}) to no request sent")
    backend_first = [from_backend(r) for r in talk.responses[: case.forwarded]]
    if backend_first != [True] * case.forwarded:
        problems.append(f"the first {case.forwarded} requests were not all forwarded")
    return problems, answered


def leftover_problems(
    case: Case, talk: Conversation, backend: RecordingBackend, write: Write | None
) -> list[str]:
    """Bytes at the backend past its last complete request: allowed only for a body still
    arriving (``open_body``), or for a request cut off (its upstream connection closed) when
    its malformed part came in a later write than its head and the balancer refused it (an
    error answer, or a close)."""
    problems = []
    last = talk.responses[-1] if talk.responses else None
    refused = talk.ending in ("closed", "reset") or (
        last is not None and not from_backend(last) and last.status >= 400
    )
    for conn in backend.conns:
        if conn.violation:
            problems.append(f"conn {conn.id}: strict parser refused it: {conn.violation}")
            continue
        if conn.partial is None and not conn.leftover:
            continue
        partial = conn.partial
        what = f"{partial.method} {partial.target}" if partial else repr(conn.leftover[:80])
        answered = sum(1 for r in talk.responses if from_backend(r))
        in_flight = (
            case.open_body
            and partial is not None
            and answered < len(case.sent)
            and (partial.method, partial.target)
            == (case.sent[answered].method, case.sent[answered].target)
        )
        cut_off = write is not None and conn.ended and refused
        if not (in_flight or cut_off):
            problems.append(f"conn {conn.id}: incomplete request left at the backend: {what}")
    return problems


async def run_case(
    port: int, backend: RecordingBackend, case: Case, write: Write | None, warm: int = 1
) -> None:
    """Send ``case`` to the balancer on ``port`` and assert the backend saw exactly what the
    client got answers for (``warm``: connections that first leave idle upstream ones)."""
    for _ in range(warm):
        await warm_up(port, backend)
    backend.reset()
    talk = await converse(port, case, write)
    await backend.settle()
    if len(backend.requests()) > sum(map(from_backend, talk.responses)):  # an answer late?
        await read_more(talk, case.sent, late=True)
    talk.writer.close()
    with contextlib.suppress(ConnectionError):
        await talk.writer.wait_closed()
    problems, answered = answers_problems(case, talk)
    seen = {r.seq: r for r in backend.requests()}
    if list(answered) != list(seen):
        problems.append(f"backend answered {list(seen)}, the client got {list(answered)}")
    for seq, j in answered.items():
        if j < len(case.sent) and seq in seen:
            problems += request_problems(case.sent[j], seen[seq])
    problems += leftover_problems(case, talk, backend, write)
    assert not problems, "\n".join([*problems, describe(talk, backend)])


@pytest.mark.parametrize(("case", "write"), RUNS)
async def test_backend_sees_exactly_the_answered_requests(
    make_balancer: BalancerFactory, case: Case, write: Write | None
) -> None:
    backend = RecordingBackend()
    lb, _ = await raw_balancer(make_balancer, backend.handler, **BALANCER)
    await run_case(lb.service.port, backend, case, write)
