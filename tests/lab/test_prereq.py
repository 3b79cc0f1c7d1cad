"""Without root or the tools, the lab says what is missing and how to get it (exit 2)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hasim.errors import HasimError
from hasim.lab import prereq
from hasim.lab.matrix import NGINX_SHORT, lab_scenario


def test_missing_tools_are_named_with_the_way_to_get_them(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(dict(lab_scenario(NGINX_SHORT, "crash").raw)))
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {**os.environ, "PATH": str(empty)}
    p = subprocess.run([sys.executable, "-m", "hasim.lab", str(path), "--trials", "1"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    for word in ("nginx", "haproxy", "iptables", "iproute2", "make system-deps"):
        assert word in p.stderr


def test_not_root_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert any(line.startswith("root") for line in prereq.missing())
    with pytest.raises(HasimError, match="make system-deps"):
        prereq.require()
