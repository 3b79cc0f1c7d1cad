"""What the lab needs from the machine, and a clear message when something is missing."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

from hasim.errors import HasimError
from hasim.lab.runner import STREAM_MODULE

#: command -> Debian package that provides it.
TOOLS = {
    "ip": "iproute2",
    "iptables": "iptables",
    "nginx": "nginx",
    "haproxy": "haproxy",
}


class LabUnavailable(HasimError):
    """The lab cannot run here (not root, or a tool missing). The CLI exits with 2."""


def _nginx_has_stream() -> bool:
    if STREAM_MODULE.exists():
        return True
    try:
        out = subprocess.run(["nginx", "-V"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    text = out.stdout + out.stderr
    return "--with-stream" in text and "--with-stream=dynamic" not in text


def missing() -> list[str]:
    """What is missing, one human line each (empty: the lab can run)."""
    out = []
    if os.geteuid() != 0:
        out.append("root (network namespaces and iptables need it; run as root or with sudo)")
    packages = []
    for cmd, pkg in TOOLS.items():
        if shutil.which(cmd) is None:
            out.append(f"`{cmd}` (Debian package {pkg})")
            packages.append(pkg)
    if shutil.which("nginx") is not None and not _nginx_has_stream():
        out.append(f"nginx's stream module ({STREAM_MODULE}, Debian package "
                   "libnginx-mod-stream)")
        packages.append("libnginx-mod-stream")
    if importlib.util.find_spec("cryptography") is None:
        out.append("the Python package `cryptography` (pip install -e '.[lab]')")
    if not Path("/proc/self/ns/net").exists():
        out.append("network namespaces (/proc/self/ns/net)")
    return out


def require() -> None:
    """Raise :class:`LabUnavailable` with what is missing and how to get it."""
    gaps = missing()
    if gaps:
        raise LabUnavailable(
            "the lab cannot run here; missing: " + "; ".join(gaps) + ". Install the tools "
            "with `make system-deps` (as root on Debian/Ubuntu: apt-get install nginx "
            "libnginx-mod-stream haproxy iproute2 iptables) and run as root.")
