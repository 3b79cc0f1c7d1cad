"""Stub kube-apiservers: one small TLS server per master, each on its own address.

A stub answers ``GET /healthz`` with 200 ``ok`` and any other request with a small JSON
body naming itself (``{"kind": "Status", "backend": "master1"}``, also in the
``X-Backend`` header), over HTTP/1.1 keep-alive or HTTP/1.0 (HAProxy's ``httpchk``). It
writes one line per request to its log, ``<monotonic time> <path>``, unbuffered, so the
count survives a SIGKILL: health checks received per second are counted there.

Run as ``python hasim/lab/stubs.py NAME ADDR PORT CERT KEY LOG`` (standard library only)
inside the lab's namespace; it prints ``ready`` once listening. The certificate is
self-signed, made at run time by :func:`make_certificate` (ECDSA P-256: cheap handshakes,
so the stub's CPU does not stretch health checks).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import signal
import ssl
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

HEALTHZ = "/healthz"


def make_certificate(directory: Path, addresses: Sequence[str]) -> tuple[Path, Path]:
    """A self-signed server certificate for ``addresses``; returns (cert, key) paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")])
    now = datetime.datetime.now(datetime.UTC)
    sans: list[x509.GeneralName] = [x509.DNSName("kubernetes"), x509.DNSName("localhost")]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ["127.0.0.1", *addresses]]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "apiserver.crt", directory / "apiserver.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


class Stub:
    """One stub apiserver (asyncio, TLS)."""

    def __init__(self, name: str, log: TextIO) -> None:
        self.name = name
        self.log = log

    def _response(self, path: str, close: bool) -> bytes:
        if path == HEALTHZ:
            body = b"ok"
            ctype = "text/plain"
        else:
            body = json.dumps({"kind": "Status", "backend": self.name}).encode()
            ctype = "application/json"
        head = (f"HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                f"X-Backend: {self.name}\r\nConnection: {'close' if close else 'keep-alive'}"
                "\r\n\r\n")
        return head.encode() + body

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                parts = lines[0].split()
                if len(parts) < 3:
                    break
                path, version = parts[1], parts[2]
                headers = {k.strip().lower(): v.strip() for k, _, v in
                           (ln.partition(":") for ln in lines[1:] if ln)}
                length = int(headers.get("content-length", "0") or 0)
                if length:
                    await reader.readexactly(length)
                self.log.write(f"{time.monotonic():.6f} {path}\n")
                close = version == "HTTP/1.0" or headers.get("connection", "").lower() == "close"
                writer.write(self._response(path, close))
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError,
                asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()


async def serve(name: str, addr: str, port: int, cert: str, key: str, log_path: str) -> None:
    """Serve until SIGTERM/SIGINT."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    log = open(log_path, "a", buffering=1)  # noqa: SIM115 - line-buffered for the process's life
    stub = Stub(name, log)
    server = await asyncio.start_server(stub.handle, addr, port, ssl=ctx, backlog=1024,
                                        reuse_address=True)
    stop = asyncio.get_running_loop().create_future()
    for s in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(s, stop.set_result, None)
    print("ready", flush=True)
    async with server:
        await stop
    log.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 6:
        print("usage: python -m hasim.lab.stubs NAME ADDR PORT CERT KEY LOG", file=sys.stderr)
        return 2
    name, addr, port, cert, key, log = args
    asyncio.run(serve(name, addr, int(port), cert, key, log))
    return 0


if __name__ == "__main__":
    sys.exit(main())
