"""The lab's clients: what goes through the load balancer, and what each request met.

Two kinds of client, both TLS end to end with the stub apiserver behind the LB (the LB
passes TCP through, as kubespray's nginx ``stream`` and HAProxy ``mode tcp`` do):

- ``short``: one client that opens a NEW connection every ``1/rate`` seconds (a fixed
  grid, not Poisson): TCP connect, TLS handshake, one ``GET``, close; the whole exchange
  must end within ``short_timeout`` or it counts as ``timeout``. Like ``kubectl`` runs or
  HTTP/1.1 clients without keep-alive.
- ``long-<k>``: ``long_clients`` clients that each keep ONE connection and send a
  request every ``long_period`` seconds (client ``k`` shifted by ``k/long_clients`` of a
  period, all of them by half a short interval: :meth:`LoadSpec.long_phase`) within
  ``long_timeout``. A connection the peer closed while idle is noticed at
  once and the next request dials afresh without failing (Go's ``http.Transport``
  ``readLoop`` does that); a failed request closes its connection (HTTP/1.1: the next one
  redials). A request that overruns its slot is followed by the next grid point.

Each request is recorded as ``(client, host, start, end, outcome, backend, kind)`` with
``outcome`` one of ``ok``, ``refused``, ``timeout``, ``reset``, ``error`` and ``backend``
the stub that answered (from its ``X-Backend`` header): the simulator's request records
exactly (``hasim.sim.records.REQUEST_COLUMNS``). :mod:`hasim.lab.simload` drives the
simulator with the same clients.

Run as ``python hasim/lab/load.py CONFIG.json OUT.jsonl`` (standard library only) inside
the lab's namespace; it prints ``ready``, then reads ``{"t0", "t_start", "t_end"}`` (monotonic
clock) as one JSON line on stdin.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import ssl
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

Record = tuple[str, str, float, float, str, str, str]
API_PATH = "/api/v1/namespaces/default"


@dataclass(frozen=True)
class LoadSpec:
    """The lab's load (the same for the real run and the simulated one)."""

    #: New short connections per second (fixed grid).
    rate: float = 20.0
    #: A short connection's whole exchange (connect, TLS, request, response) must end
    #: within this or it counts as a timeout (longer than nginx's ``proxy_connect_timeout``
    #: of 1 s, so that a connect that nginx retries on the next server can still succeed).
    short_timeout: float = 1.5
    #: Clients that each keep one connection.
    long_clients: int = 3
    #: Seconds between two requests of a long-lived client.
    long_period: float = 0.5
    #: Timeout of one request of a long-lived client (including a redial).
    long_timeout: float = 1.5

    def long_phase(self, k: int) -> float:
        """When long-lived client ``k`` sends its first request, after the load starts:
        ``k/long_clients`` of a period, plus half the short client's interval, so that no
        long client's connect (its first, or a redial after a failure, which follows its
        own grid) is ever made at the instant of a short one. Two connects at once keep
        nginx's worker 0 busy with one when the other arrives, and worker 1 takes it, with
        a failure state of its own; a node's kubelet meets no such coincidence and the
        simulator models the idle case (hasim.sim.nginx). With the short grid at 0, 50,
        100 ms... and the long ones at 0, 167, 333 ms, every request of long-0 was made at
        the instant of a short connect; now the nearest are 8 ms apart. (Worker 1 can
        still take a connection when worker 0 is busy for another reason, such as the
        host's other load: a trial where both workers saw the blackholed master fails
        over about ``proxy_connect_timeout`` later.)"""
        offset = 0.5 / self.rate if self.rate > 0 else 0.0
        return offset + self.long_period * k / max(self.long_clients, 1)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Done(Exception):
    pass


def _outcome(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError |
                  asyncio.IncompleteReadError | ssl.SSLError | EOFError):
        return "reset"
    return "error"


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    close: bool) -> str:
    """One GET; returns the backend that answered (raises on failure)."""
    conn = "close" if close else "keep-alive"
    writer.write(f"GET {API_PATH} HTTP/1.1\r\nHost: kubernetes\r\nConnection: {conn}\r\n"
                 "User-Agent: hasim-lab\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split()
    headers = {k.strip().lower(): v.strip() for k, _, v in
               (ln.partition(":") for ln in lines[1:] if ln)}
    length = int(headers.get("content-length", "0") or 0)
    if length:
        await reader.readexactly(length)
    if len(status) < 2 or status[1] != "200":
        raise RuntimeError(f"HTTP {status[1] if len(status) > 1 else '?'}")
    return headers.get("x-backend", "")


class LoadGenerator:
    """Runs the clients from ``t_start`` to ``t_end`` (monotonic clock) and records."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.spec = LoadSpec(**cfg["load"])
        self.addr: str = cfg["address"]
        self.port: int = int(cfg["port"])
        self.host: str = cfg["host"]
        self.t0: float = float(cfg["t0"])
        self.t_start: float = float(cfg["t_start"])
        self.t_end: float = float(cfg["t_end"])
        self.records: list[Record] = []
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # like HAProxy's `verify none`: not what is tested
        self.ctx = ctx

    def _record(self, client: str, start: float, end: float, outcome: str, backend: str,
                kind: str) -> None:
        if end <= self.t_end:
            self.records.append((client, self.host, start - self.t0, end - self.t0, outcome,
                                 backend, kind))

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(self.addr, self.port, ssl=self.ctx,
                                             server_hostname="kubernetes")

    async def _short_one(self) -> None:
        start = time.monotonic()
        writer = None
        backend, outcome = "", "ok"
        try:
            async with asyncio.timeout(self.spec.short_timeout):
                reader, writer = await self._open()
                backend = await _exchange(reader, writer, close=True)
        except Exception as exc:  # noqa: BLE001 - every failure is a recorded outcome
            outcome = _outcome(exc)
        finally:
            if writer is not None:
                writer.transport.abort()
        self._record(f"{self.host}/short", start, time.monotonic(), outcome, backend, "short")

    async def _short(self) -> None:
        if self.spec.rate <= 0:
            return
        loop = asyncio.get_running_loop()
        tasks: set[asyncio.Task[None]] = set()
        i = 0
        while True:
            at = self.t_start + i / self.spec.rate
            if at >= self.t_end:
                break
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            t = loop.create_task(self._short_one())
            tasks.add(t)
            t.add_done_callback(tasks.discard)
            i += 1
        await asyncio.sleep(max(0.0, self.t_end - time.monotonic()))

    async def _long(self, k: int) -> None:
        spec = self.spec
        name = f"{self.host}/long-{k}"
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        at = self.t_start + spec.long_phase(k)
        while at < self.t_end:
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            if conn is not None and (conn[0].at_eof() or conn[0].exception() is not None
                                     or conn[1].is_closing()):
                conn[1].transport.abort()  # closed by the peer while idle: redial quietly
                conn = None
            start = time.monotonic()
            backend, outcome = "", "ok"
            try:
                async with asyncio.timeout(spec.long_timeout):
                    if conn is None:
                        conn = await self._open()
                    backend = await _exchange(conn[0], conn[1], close=False)
            except Exception as exc:  # noqa: BLE001
                outcome = _outcome(exc)
                if conn is not None:
                    conn[1].transport.abort()
                conn = None
            end = time.monotonic()
            self._record(name, start, end, outcome, backend, "long")
            while at <= end:
                at += spec.long_period
        if conn is not None:
            conn[1].transport.abort()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        stop = loop.create_future()

        def _stop() -> None:
            if not stop.done():
                stop.set_result(None)

        for s in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(s, _stop)
        jobs = [loop.create_task(self._short())]
        jobs += [loop.create_task(self._long(k)) for k in range(self.spec.long_clients)]
        everything = asyncio.gather(*jobs)
        await asyncio.wait([everything, stop], return_when=asyncio.FIRST_COMPLETED)
        for j in jobs:
            j.cancel()
        with contextlib.suppress(BaseException):
            await everything


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m hasim.lab.load CONFIG.json OUT.jsonl", file=sys.stderr)
        return 2
    with open(args[0], encoding="utf-8") as f:
        cfg = json.load(f)
    # Started before the load balancer: the times come on stdin once it listens, so that
    # the interpreter's start-up is not on the trial's clock.
    print("ready", flush=True)
    line = sys.stdin.readline()
    if not line.strip():
        return 1
    cfg.update(json.loads(line))
    gen = LoadGenerator(cfg)
    try:
        asyncio.run(gen.run())
    finally:
        with open(args[1], "w", encoding="utf-8") as out:
            for r in gen.records:
                out.write(json.dumps(r) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
