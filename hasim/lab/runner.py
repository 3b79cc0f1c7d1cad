"""Real processes of the lab: the stub apiservers and nginx or HAProxy, inside the namespace.

The load balancer's configuration is :func:`hasim.graph.render.render_config`'s text for the
scenario's LB host, with only the listen address and the server addresses replaced by
the lab's (``listen``/``servers`` arguments): the simulator and the lab share one
source. Two lab-only additions that change no behaviour: nginx gets ``daemon off``, a
``pid`` file in the run directory and ``load_module`` of Debian's dynamic ``stream``
module on its command line (``-g``); HAProxy runs in the foreground (``-db``).

What the LB says is read from its stderr by a thread that stamps each line with the
monotonic clock on arrival (the logs' own timestamps are whole seconds):

- nginx (``error_log stderr notice``): ``upstream server temporarily disabled`` is
  logged by a worker when a failure makes a peer reach ``max_fails``
  (``ngx_stream_upstream_free_round_robin_peer``): that worker stops choosing it.
- HAProxy: ``Server <backend>/<name> is DOWN`` / ``is UP`` (``srv_set_stopped``/
  ``srv_set_running`` warnings, printed on stderr in foreground mode).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hasim.lab.netns import Namespace

STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")
#: The stub and the load generator run as plain scripts (standard library only): importing
#: the ``hasim`` package (pandas, pydantic, ansible) would cost seconds per process.
STUB_SCRIPT = Path(__file__).with_name("stubs.py")
LOAD_SCRIPT = Path(__file__).with_name("load.py")
State = tuple[float, str, str, str, str, str, str]

_NGINX_DOWN = re.compile(r"\] (\d+)#\d+: .*upstream server temporarily disabled.*"
                         r"upstream: \"([0-9.]+:\d+)\"")
_HAPROXY_STATE = re.compile(r"Server (\S+)/(\S+) is (DOWN|UP)(?:, reason: ([^,]*))?")


class LabProcessError(RuntimeError):
    """A lab process did not start (the message has its output)."""


def listening(pid: int, addr: str, port: int) -> bool:
    """Whether a socket in ``pid``'s network namespace listens on ``addr:port``
    (read from ``/proc/<pid>/net/tcp``: no process needs to run in the namespace)."""
    a = "".join(f"{int(x):02X}" for x in reversed(addr.split(".")))
    want = f"{a}:{port:04X}"
    try:
        text = Path(f"/proc/{pid}/net/tcp").read_text()
    except OSError:
        return False
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) > 3 and cols[1] == want and cols[3] == "0A":
            return True
    return False


def _wait_listening(p: subprocess.Popen[Any], addr: str, port: int, what: str,
                    output: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not listening(p.pid, addr, port):
        if p.poll() is not None:
            raise LabProcessError(f"{what} exited with {p.returncode}: {output()}")
        if time.monotonic() > deadline:
            raise LabProcessError(f"{what} not listening on {addr}:{port} after {timeout}s: "
                                  f"{output()}")
        time.sleep(0.01)


@dataclass
class StubServer:
    """One running stub apiserver."""

    name: str
    address: str
    port: int
    log: Path
    proc: subprocess.Popen[Any] | None = None


class Stubs:
    """The stub apiservers of a lab run, one process each (so one can be SIGKILLed)."""

    def __init__(self, ns: Namespace, run_dir: Path, servers: Sequence[tuple[str, str, int]],
                 cert: Path, key: Path) -> None:
        self.ns = ns
        self.run_dir = run_dir
        self.cert, self.key = cert, key
        self.servers = {name: StubServer(name, addr, port, run_dir / f"stub-{name}.log")
                        for name, addr, port in servers}

    def start(self, name: str) -> None:
        s = self.servers[name]
        s.proc = self.ns.popen([sys.executable, "-I", str(STUB_SCRIPT), name, s.address,
                                str(s.port), str(self.cert), str(self.key), str(s.log)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_listening(s.proc, s.address, s.port, f"stub {name}", lambda: "")

    def start_all(self) -> None:
        for name in self.servers:
            self.start(name)

    def kill(self, name: str) -> float:
        """SIGKILL the stub (its kernel then answers RST); returns when it was sent."""
        s = self.servers[name]
        assert s.proc is not None
        t = time.monotonic()
        self.ns.kill(s.proc, signal.SIGKILL)
        s.proc = None
        return t

    def stop_all(self) -> None:
        for s in self.servers.values():
            if s.proc is not None:
                self.ns.kill(s.proc, signal.SIGKILL)
                s.proc = None

    def requests(self, name: str) -> list[tuple[float, str]]:
        """(monotonic time, path) of every request the stub has logged."""
        path = self.servers[name].log
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            t, _, p = line.partition(" ")
            try:
                out.append((float(t), p))
            except ValueError:
                continue  # a line cut by SIGKILL
        return out

    def truncate_logs(self) -> None:
        for s in self.servers.values():
            s.log.write_text("")


@dataclass
class Balancer:
    """A running nginx or HAProxy and the state changes it has logged."""

    kind: str  # "nginx" or "haproxy"
    proc: subprocess.Popen[Any]
    lines: list[tuple[float, str]] = field(default_factory=list)
    reader: threading.Thread | None = None

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.lines.append((time.monotonic(), raw.decode("utf-8", "replace").rstrip()))

    def output(self) -> str:
        return " | ".join(line for _, line in self.lines[-8:])

    def states(self, host: str, component: str, by_addr: dict[str, str], t0: float
               ) -> list[State]:
        """The LB's view changes as state records (``hasim.sim.records.STATE_COLUMNS``)."""
        out: list[State] = []
        for t, line in list(self.lines):
            if self.kind == "nginx":
                m = _NGINX_DOWN.search(line)
                if m:
                    out.append((t - t0, f"{component}[w{m.group(1)}]", host,
                                by_addr.get(m.group(2), m.group(2)), "up", "down",
                                "upstream server temporarily disabled"))
                continue
            m = _HAPROXY_STATE.search(line)
            if m:
                to = m.group(3).lower()
                out.append((t - t0, component, host, m.group(2),
                            "up" if to == "down" else "down", to, (m.group(4) or "").strip()))
        return out

    def stop(self, ns: Namespace) -> None:
        ns.kill(self.proc, signal.SIGKILL)
        if self.reader is not None:
            self.reader.join(timeout=2)


def start_balancer(ns: Namespace, run_dir: Path, filename: str, text: str, addr: str,
                   port: int) -> Balancer:
    """Write the rendered configuration and start the LB it is for, in the foreground."""
    conf = run_dir / filename
    conf.write_text(text)
    if filename == "nginx.conf":
        nginx = shutil.which("nginx") or "nginx"
        directives = f"daemon off; pid {run_dir}/nginx.pid;"
        if STREAM_MODULE.exists():
            directives += f" load_module {STREAM_MODULE};"
        cmd = [nginx, "-e", "stderr", "-p", str(run_dir), "-c", str(conf), "-g", directives]
        kind = "nginx"
    else:
        cmd = [shutil.which("haproxy") or "haproxy", "-db", "-f", str(conf)]
        kind = "haproxy"
    proc = ns.popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    lb = Balancer(kind, proc)
    lb.reader = threading.Thread(target=lb._read, daemon=True, name=f"{kind}-stderr")
    lb.reader.start()
    try:
        _wait_listening(proc, addr, port, kind, lb.output)
    except BaseException:
        lb.stop(ns)
        raise
    return lb
