"""Read a user's real Ansible inventory through ansible-core's own code.

Kubespray derives the control-plane topology (which hosts run an apiserver, which one is
``groups['kube-master'][0]``, which port the local load balancer listens on) from the Ansible
inventory. Re-implementing Ansible's INI/YAML parsing, host ranges, ``:children`` groups and
``group_vars``/``host_vars`` precedence would drift from the real thing, so this module asks
ansible-core itself (``InventoryManager``, ``VariableManager``, ``Templar``) and only converts
the result into small immutable Python values.

ansible-core is imported lazily inside :func:`read_inventory` so ``import hasim`` stays fast.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
import threading
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from hasim.errors import HasimError

__all__ = ["InventoryData", "InventoryError", "InventoryHost", "read_inventory"]

# Groups Ansible creates implicitly; every host is in one of them, so they carry no topology.
_IMPLICIT_GROUPS = frozenset({"all", "ungrouped"})

# Variables VariableManager adds on its own (magic variables). They describe the Ansible run,
# not the user's inventory, so they are kept out of InventoryHost.vars (but stay available to
# templates, e.g. "{{ groups['kube-master'][0] }}").
# The play/role ones cannot occur here (there is no play) but are listed for completeness.
_MAGIC_VARS = frozenset(
    {
        "group_names",
        "groups",
        "hostvars",
        "inventory_dir",
        "inventory_file",
        "inventory_hostname",
        "inventory_hostname_short",
        "omit",
        "play_hosts",
        "playbook_dir",
        "role_name",
        "role_names",
        "role_path",
        "role_uuid",
    }
)

# ansible_* variables are connection/internal settings, except these, which the simulator
# uses as host addresses (ansible_default_ipv4 is normally a fact but may be set by hand).
# ansible_ssh_host is the pre-2.0 spelling of ansible_host (kargo's 2016 inventory.example).
_KEPT_ANSIBLE_VARS = frozenset(
    {"ansible_host", "ansible_ssh_host", "ansible_port", "ansible_default_ipv4"}
)

_YAML_SUFFIXES = (".yml", ".yaml", ".json")

# read_inventory() temporarily patches process-wide Ansible state (constants, the Display
# singleton); serialise calls so concurrent readers cannot restore each other's patches.
_LOCK = threading.Lock()


@dataclass(frozen=True)
class InventoryHost:
    """One inventory host as Ansible sees it.

    ``groups`` lists every group the host is in, directly or through ``:children``, in the
    order the groups appear in the inventory, without ``all``/``ungrouped``. ``vars`` are the
    host's merged variables with Ansible's precedence, Jinja2 templates resolved where
    possible, and Ansible's magic/connection variables removed.
    """

    name: str
    groups: tuple[str, ...]
    vars: dict[str, Any]


@dataclass(frozen=True)
class InventoryData:
    """A whole inventory: its hosts in Ansible's order and each group's members.

    ``groups`` maps every group except ``all``/``ungrouped`` to its member host names in the
    order Ansible's ``groups[...]`` magic variable gives them; kubespray's "first master"
    ``groups['kube-master'][0]`` is taken from this order.
    """

    source: str
    hosts: tuple[InventoryHost, ...]
    groups: dict[str, tuple[str, ...]]

    def host(self, name: str) -> InventoryHost:
        """Return the host called ``name``; raise ``KeyError`` if there is none."""
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)


class InventoryError(HasimError, ValueError):
    """An inventory cannot be read; the one-line message names the path and the problem.

    A :class:`~hasim.errors.HasimError`, so the CLI reports it as bad input on one line.
    """


def read_inventory(path: str | os.PathLike[str]) -> InventoryData:
    """Read an Ansible inventory file (INI or YAML) or directory the way Ansible does.

    ``group_vars/`` and ``host_vars/`` next to the inventory are applied. Raises
    :class:`InventoryError` if the path does not exist, Ansible cannot parse it, or it
    defines no hosts.
    """
    source = os.fspath(path)
    if not os.path.exists(source):
        raise InventoryError(f"inventory path does not exist: {source}")
    with _LOCK:
        ansible = _import_ansible()
        with _quiet_and_strict(ansible) as parse_failures:
            return _read(ansible, source, parse_failures)


def _read(
    ansible: SimpleNamespace, source: str, parse_failures: list[tuple[str, object]]
) -> InventoryData:
    loader = ansible.DataLoader()
    # Ansible's host_group_vars plugin remembers, per process, which group_vars/host_vars
    # files it found (FOUND) and which directories were missing (NAK): a file added since
    # (a user pasting hasim's recommended vars) would go unseen by a second read.
    from ansible.plugins.vars import host_group_vars

    host_group_vars.FOUND.clear()
    host_group_vars.NAK.clear()
    try:
        # An absolute path keeps Ansible from treating a relative path containing a comma as
        # its "host1,host2" host-list syntax.
        inventory = ansible.InventoryManager(loader=loader, sources=[os.path.abspath(source)])
    except Exception as exc:  # Ansible wraps plugin errors, but never let a traceback escape
        raise InventoryError(_parse_error_message(source, exc, parse_failures)) from exc

    group_members = {
        name: tuple(members)
        for name, members in inventory.get_groups_dict().items()
        if name not in _IMPLICIT_GROUPS
    }
    # First-appearance order: groups in the order the inventory defines them, each group's
    # own members in order. Ansible's get_hosts() walks the group tree breadth-first and can
    # change order between runs for nested layouts; a simulation needs one stable order.
    seen: dict[str, Any] = {}
    for group in inventory.groups.values():
        for member in group.hosts:
            seen.setdefault(member.name, member)
    for member in inventory.get_hosts():
        seen.setdefault(member.name, member)
    ansible_hosts = list(seen.values())
    if not ansible_hosts:
        raise InventoryError(f"inventory has no hosts: {source}")

    group_rank = {name: rank for rank, name in enumerate(group_members)}
    variable_manager = ansible.VariableManager(loader=loader, inventory=inventory)
    # Registers itself with the VariableManager (as a playbook run does), so templates such as
    # "{{ hostvars[groups['etcd'][0]]['ip'] }}" resolve; other hosts' vars load only on use.
    ansible.HostVars(inventory=inventory, variable_manager=variable_manager, loader=loader)
    hosts = []
    for ansible_host in ansible_hosts:
        try:
            all_vars = variable_manager.get_vars(host=ansible_host, include_hostvars=True)
        except Exception as exc:  # e.g. a broken group_vars file, found only now
            raise InventoryError(
                f"cannot read variables of host {ansible_host.name} in inventory {source}: "
                f"{_describe(exc)}"
            ) from exc
        templar = ansible.Templar(loader=loader, variables=all_vars)
        host_vars = {
            str(key): _resolve(value, templar)
            for key, value in all_vars.items()
            if _is_user_var(str(key))
        }
        member_of = sorted(
            (g.name for g in ansible_host.get_groups() if g.name in group_rank),
            key=group_rank.__getitem__,
        )
        hosts.append(InventoryHost(str(ansible_host.name), tuple(member_of), host_vars))
    return InventoryData(source=source, hosts=tuple(hosts), groups=group_members)


def _is_user_var(name: str) -> bool:
    if name in _MAGIC_VARS:
        return False
    return not name.startswith("ansible_") or name in _KEPT_ANSIBLE_VARS


def _resolve(value: Any, templar: Any) -> Any:
    """Template ``value`` leaf by leaf, so one unresolvable string does not block the rest."""
    if isinstance(value, str):
        if not templar.is_possibly_template(value):
            return str(value)
        try:
            return _plain(templar.template(value, fail_on_undefined=False))
        except Exception:  # syntax errors, failing filters/lookups: keep what the user wrote
            return str(value)
    if isinstance(value, Mapping):
        return {_plain(k): _resolve(v, templar) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_resolve(v, templar) for v in value]
    return _plain(value)


def _plain(value: Any) -> Any:
    """Convert Ansible's tagged str/int/dict/... subclasses into builtin types."""
    # bool before int: bool is an int subclass, and int(True) would lose the type.
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _import_ansible() -> SimpleNamespace:
    """Import the ansible-core pieces used here, without import-time noise or ~/.ansible writes.

    Importing ``ansible.constants`` resolves the whole configuration once: it creates a
    private ``ansible-local-*`` directory under DEFAULT_LOCAL_TMP (``~/.ansible/tmp`` by default)
    and may print config warnings (e.g. about an ansible.cfg in a world-writable directory).
    """
    temp_env = (
        {} if "ANSIBLE_LOCAL_TEMP" in os.environ else {"ANSIBLE_LOCAL_TEMP": tempfile.gettempdir()}
    )
    with _environ(temp_env), _silenced_output():
        from ansible import constants
        from ansible.inventory.manager import InventoryManager
        from ansible.parsing.dataloader import DataLoader
        from ansible.template import Templar
        from ansible.utils.display import Display
        from ansible.vars.hostvars import HostVars
        from ansible.vars.manager import VariableManager

        # Display is a singleton; creating it here keeps its stdio setup inside the redirect.
        display = Display()
    return SimpleNamespace(
        constants=constants,
        display=display,
        DataLoader=DataLoader,
        InventoryManager=InventoryManager,
        Templar=Templar,
        VariableManager=VariableManager,
        HostVars=HostVars,
    )


@contextlib.contextmanager
def _environ(values: Mapping[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


@contextlib.contextmanager
def _silenced_output() -> Iterator[None]:
    with (
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        yield


@contextlib.contextmanager
def _quiet_and_strict(ansible: SimpleNamespace) -> Iterator[list[tuple[str, object]]]:
    """Make inventory parse failures fatal and route Ansible's messages away from the terminal.

    By default Ansible only warns about an unparsable source and carries on with an empty
    inventory. The two INVENTORY_*UNPARSED* constants (read by InventoryManager at call time)
    make it raise instead. The per-plugin reasons Ansible would have printed as warnings are
    collected as (plugin name, exception) pairs for the error message.
    """
    failures: list[tuple[str, object]] = []

    def record_failure(
        msg: str | None = None, exception: BaseException | None = None, **_: Any
    ) -> None:
        plugin = re.search(r"'([\w.]+)' plugin", msg or "")
        failures.append((plugin.group(1) if plugin else "", exception or msg or ""))

    constants = ansible.constants
    saved_constants = {
        name: getattr(constants, name)
        for name in ("INVENTORY_UNPARSED_IS_FAILED", "INVENTORY_ANY_UNPARSED_IS_FAILED")
    }
    # Patch the instance, not the class: instance attributes shadow the methods, and deleting
    # them afterwards restores the original behaviour exactly.
    display = ansible.display
    patches = {"display": _discard, "error_as_warning": record_failure}
    saved_display = {name: display.__dict__[name] for name in patches if name in display.__dict__}
    try:
        for name in saved_constants:
            setattr(constants, name, True)
        for name, replacement in patches.items():
            setattr(display, name, replacement)
        # Everything Ansible prints goes through Display.display, patched above; Python
        # warnings (e.g. from jinja2) are the other way text could reach the terminal.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield failures
    finally:
        for name, value in saved_constants.items():
            setattr(constants, name, value)
        for name in patches:
            if name in saved_display:
                setattr(display, name, saved_display[name])
            else:
                delattr(display, name)


def _discard(*_args: Any, **_kwargs: Any) -> None:
    return None


def _parse_error_message(
    source: str, exc: BaseException, failures: list[tuple[str, object]]
) -> str:
    """One line saying which file Ansible could not parse, where, and the most relevant reason."""
    failed = re.search(r"failed to parse inventory source (.+)$", _one_line(exc))
    failed_source = failed.group(1) if failed else source
    if not failures:
        if os.path.isdir(failed_source):
            return f"no inventory file Ansible can read in directory: {source}"
        return f"cannot parse inventory {source}: {_describe(exc, source)}"
    # Ansible tries every plugin that accepts the file; the one matching the file type gives
    # the useful reason (the 'auto' plugin, say, only complains about a missing 'plugin' key).
    wanted = "yaml" if failed_source.endswith(_YAML_SUFFIXES) else "ini"
    problem = next((p for plugin, p in failures if plugin == wanted), failures[0][1])
    reason = _describe(problem, source)
    if os.path.abspath(failed_source) != os.path.abspath(source) and failed_source not in reason:
        reason = f"{failed_source}: {reason}"
    return f"cannot parse inventory {source}: {reason}"


def _describe(problem: object, source: str | None = None) -> str:
    """One line: the file and line Ansible blames, if it knows them, then the message.

    A location inside ``source`` itself (already named by the caller) is shortened to the line.
    """
    text = _one_line(problem).removeprefix("Failed to parse inventory: ")
    where = _origin(problem)
    if where and source is not None:
        path, _, line = where.partition(":")
        if os.path.abspath(path) == os.path.abspath(source):
            where = f"line {line}" if line else None
    return f"{where}: {text}" if where else text


def _origin(problem: object) -> str | None:
    """``path:line`` of the first error in the chain that carries an Ansible origin."""
    # ansible-core 2.19 attaches an Origin (path, line_num) as ``obj`` to the innermost
    # parser error and re-raises it wrapped; older versions have no such attribute.
    error = problem if isinstance(problem, BaseException) else None
    for _ in range(10):  # bounded: exception chains can be cyclic
        if error is None:
            break
        origin = getattr(error, "obj", None)
        path = getattr(origin, "path", None)
        if isinstance(path, str):
            line = getattr(origin, "line_num", None)
            return f"{path}:{line}" if line else path
        error = error.__cause__ or error.__context__
    return None


def _one_line(problem: object) -> str:
    """First non-blank line of a message; Ansible appends source excerpts on later lines."""
    text = str(problem)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(problem).__name__
