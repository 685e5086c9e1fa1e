"""The smuggling corpus's invariant with ``--workers 2``: a real ``python -m balancer`` whose
primary and worker processes share the port, over one ``RecordingBackend`` (``--backends``).

Workers run only the data path and reach the admin app over the primary's socket, so this
pass covers the admin and worker-only paths, the known holes and a few framings. The kernel
spreads connections over both processes (SO_REUSEPORT), so each payload goes over several
connections, each one checked on its own, after warm-up requests that leave idle upstream
connections in both processes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.http.recording_backend import RecordingBackend
from tests.http.smuggling_cases import Case
from tests.http.smuggling_corpus import CORPUS
from tests.http.test_smuggling import BALANCER, run_case
from tests.support.balancer_process import BalancerProcess

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

CONNECTIONS = 3  # per payload: the chance that all go to the same process is 1 in 4
IDS = {
    "get",
    "post-cl",
    "post-chunked",
    "cl-te",
    "te-cl",
    "te-xchunked",
    "te-identity-chunked",
    "cl-plus",
    "chunk-size-overflow",
    "chunked-then-request",
    "conn-content-length",
    "conn-transfer-encoding",
    "conn-host",
    "pipe-bad-middle",
    "pipe-overflow-middle",
    "absolute-form",
    "absolute-form-home",
    "connect",
    "upgrade-websocket",
    "http10-no-host",
    *(c.id for c in CORPUS if c.id.startswith("admin-")),
}
CASES = [pytest.param(c, id=c.id) for c in CORPUS if c.id in IDS]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def workers_lb(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[BalancerProcess, RecordingBackend]]:
    backend = RecordingBackend()
    server = await backend.serve_forever()
    port = server.sockets[0].getsockname()[1]
    log = Path(tmp_path_factory.mktemp("smuggling")) / "balancer.log"
    lb = BalancerProcess(
        log,
        "--workers=2",
        f"--backends=127.0.0.1:{port}",
        f"--hash-name={BALANCER['hash_name']}",
        f"--hash-seed={BALANCER['hash_seed']}",
    )
    try:
        await asyncio.to_thread(lb.wait_listening)  # the backend answers heartbeats meanwhile
        await asyncio.sleep(1.0)  # the worker binds the same port (SO_REUSEPORT)
        yield lb, backend
    finally:
        await asyncio.to_thread(lb.stop)
        server.close()
        await server.wait_closed()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", CASES)
async def test_workers_backend_sees_exactly_the_answered_requests(
    workers_lb: tuple[BalancerProcess, RecordingBackend], case: Case
) -> None:
    lb, backend = workers_lb
    for _ in range(CONNECTIONS):
        await run_case(lb.port, backend, case, None, warm=4)
