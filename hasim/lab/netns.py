"""The lab's network namespace and every process and rule it holds, removed on any exit.

Everything the lab runs (stub apiservers, nginx or HAProxy, the load clients) lives in
one namespace ``hasim-lab-<pid>`` that this module creates, with only ``lo`` up: the
stub addresses (``127.0.1.x``) are added to that ``lo``, so no packet can leave it, and
blackhole rules are ``iptables`` rules of that namespace only. Removing the namespace
(``ip netns delete``) drops its rules; its processes are killed first, by process group
and then by what ``ip netns pids`` still lists (nothing else can be in a namespace we
created and never handed out).

Cleanup runs from ``try/finally`` in the caller, from :func:`atexit`, and on SIGTERM/
SIGHUP (turned into :class:`SystemExit` so that ``finally`` blocks run; SIGINT already
raises :class:`KeyboardInterrupt`). A namespace whose owner died without cleaning up
(``kill -9``) is reaped by the next run: its name carries the owner's pid.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

PREFIX = "hasim-lab-"
NETNS_DIR = Path("/run/netns")
_CREATE_LOCK = threading.Lock()


class NetnsError(RuntimeError):
    """A namespace operation failed (the message has the command and its stderr)."""


def _run(args: Sequence[str], check: bool = True, timeout: float = 10.0) -> str:
    p = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise NetnsError(f"{' '.join(args)}: {p.stderr.strip() or p.returncode}")
    return p.stdout


def list_namespaces() -> list[str]:
    """Names of all network namespaces (``ip netns list``)."""
    out = _run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def ns_pids(name: str) -> list[int]:
    """Processes inside namespace ``name``."""
    out = _run(["ip", "netns", "pids", name], check=False)
    return [int(x) for x in out.split() if x.isdigit()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Namespace:
    """One lab namespace: ``lo`` up, the stub addresses on it, processes and rules."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.procs: list[subprocess.Popen[Any]] = []
        self.inode: int | None = None
        self.deleted = False

    # -- lifecycle ------------------------------------------------------------------------
    @classmethod
    def create(cls, addresses: Sequence[str] = ()) -> Namespace:
        """Create ``hasim-lab-<pid>[-n]`` with ``lo`` up and ``addresses`` on it."""
        with _CREATE_LOCK:  # parallel cells of one run pick distinct names
            reap_stale()
            base = f"{PREFIX}{os.getpid()}"
            existing = set(list_namespaces())
            name, n = base, 1
            while name in existing:
                n += 1
                name = f"{base}-{n}"
            ns = cls(name)
            _REGISTRY.add(ns)
            _run(["ip", "netns", "add", name])
        ns.inode = os.stat(NETNS_DIR / name).st_ino
        HISTORY.append(ns)
        ns.exec_check(["ip", "link", "set", "lo", "up"])
        for addr in addresses:
            ns.exec_check(["ip", "addr", "add", f"{addr}/32", "dev", "lo"])
        return ns

    def argv(self, cmd: Sequence[str]) -> list[str]:
        """``cmd`` run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *cmd]

    def exec_check(self, cmd: Sequence[str], timeout: float = 10.0) -> str:
        """Run a short command inside the namespace; raise on failure."""
        return _run(self.argv(cmd), timeout=timeout)

    def popen(self, cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a long-running process inside the namespace, in its own process group
        (so that it and its children, e.g. nginx workers, die together)."""
        if self.deleted:
            raise NetnsError(f"namespace {self.name} is gone")
        p = subprocess.Popen(self.argv(cmd), start_new_session=True, **kwargs)
        self.procs.append(p)
        return p

    def kill(self, p: subprocess.Popen[Any], sig: int = signal.SIGKILL) -> None:
        """Signal a process group started by :meth:`popen` and reap it."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, sig)
        if sig == signal.SIGKILL:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=5)

    def terminate(self, p: subprocess.Popen[Any], grace: float = 5.0) -> None:
        """SIGTERM to a process group started by :meth:`popen` (so that it can exit
        cleanly), reaped within ``grace`` seconds, else SIGKILL."""
        self.kill(p, signal.SIGTERM)
        try:
            p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.kill(p)

    # -- blackholes -----------------------------------------------------------------------
    def _drop_rules(self, addr: str) -> list[list[str]]:
        # Both directions: the address answers nothing and sends nothing, like a host
        # that vanished or a cut link (established connections hang, new ones get no
        # SYN-ACK). On ``lo`` every packet goes through INPUT, so these two suffice.
        return [["INPUT", "-d", f"{addr}/32", "-j", "DROP"],
                ["INPUT", "-s", f"{addr}/32", "-j", "DROP"]]

    def blackhole(self, addr: str) -> None:
        """Drop every packet to and from ``addr`` inside the namespace."""
        for rule in self._drop_rules(addr):
            self.exec_check(["iptables", "-w", "-A", *rule])

    def unblackhole(self, addr: str) -> None:
        """Remove :meth:`blackhole`'s rules."""
        for rule in self._drop_rules(addr):
            self.exec_check(["iptables", "-w", "-D", *rule])

    def rules(self) -> list[str]:
        """The namespace's iptables rules (``iptables -S``)."""
        return self.exec_check(["iptables", "-w", "-S"]).splitlines()

    # -- teardown -------------------------------------------------------------------------
    def delete(self) -> None:
        """Kill every process of the namespace, then remove it (and so its rules)."""
        if self.deleted:
            return
        with _signals_held():
            for p in self.procs:
                self.kill(p)
            if (NETNS_DIR / self.name).exists():
                _kill_inside(self.name)
                _run(["ip", "netns", "delete", self.name], check=False)
            self.deleted = True
            _REGISTRY.discard(self)

    def __enter__(self) -> Namespace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.delete()


@contextlib.contextmanager
def _handling(signums: tuple[int, ...], handler: Any) -> Iterator[None]:
    """``handler`` for ``signums`` within the block, the previous handlers afterwards. A
    no-op outside the main thread (signal handlers can only be set there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, handler) for s in signums}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """A Ctrl-C (or SIGTERM) must not cut a cleanup short: hold it meanwhile and deliver
    it when the cleanup is done."""
    held: list[int] = []
    try:
        with _handling((signal.SIGINT, signal.SIGTERM),
                       lambda signum, _frame: held.append(signum)):
            yield
    finally:
        if held:
            # Deferred, not dropped: a Ctrl-C that came during the cleanup still stops
            # the run (exit 130) once the cleanup is done.
            signal.raise_signal(held[0])


def _kill_inside(name: str) -> None:
    """SIGKILL whatever still runs in a namespace of ours, and wait for it to go."""
    deadline = time.monotonic() + 5.0
    while True:
        pids = [p for p in ns_pids(name) if p != os.getpid()]
        if not pids or time.monotonic() > deadline:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def reap_stale() -> list[str]:
    """Remove lab namespaces whose owning process is gone (a run killed with -9)."""
    reaped = []
    for name in list_namespaces():
        if not name.startswith(PREFIX):
            continue
        owner = name[len(PREFIX):].split("-", 1)[0]
        if owner.isdigit() and not _pid_alive(int(owner)):
            _kill_inside(name)
            _run(["ip", "netns", "delete", name], check=False)
            reaped.append(name)
    return reaped


def processes_in(inode: int) -> list[int]:
    """Pids whose network namespace is the one with ``inode`` (leak checks in tests)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            link = os.readlink(d / "ns" / "net")
        except OSError:
            continue
        if link == f"net:[{inode}]":
            out.append(int(d.name))
    return out


class _Registry:
    """Every namespace alive in this process, for atexit and signal cleanup."""

    def __init__(self) -> None:
        self.items: list[Namespace] = []
        self.lock = threading.Lock()

    def add(self, ns: Namespace) -> None:
        with self.lock:
            self.items.append(ns)

    def discard(self, ns: Namespace) -> None:
        with self.lock:
            if ns in self.items:
                self.items.remove(ns)

    def cleanup(self) -> None:
        for ns in list(self.items):
            with contextlib.suppress(Exception):
                ns.delete()


_REGISTRY = _Registry()
#: Every namespace this process created (deleted or not), with the pids it started: what
#: the cleanup tests check against.
HISTORY: list[Namespace] = []
atexit.register(_REGISTRY.cleanup)


#: Set when a run is being torn down: lab threads stop waiting and unwind.
stopping = threading.Event()


def cleanup_all() -> None:
    """Delete every namespace this process created and still holds."""
    stopping.set()
    _REGISTRY.cleanup()


def _raise_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def exit_on_signals() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP unwind the stack like Ctrl-C does, so every
    ``finally`` runs; the previous handlers come back afterwards. A no-op outside the
    main thread (signal handlers can only be set there)."""
    with _handling((signal.SIGTERM, signal.SIGHUP), _raise_exit):
        yield
