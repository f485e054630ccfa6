"""The package's layout says which process runs what; these checks keep it so (read from the source, nothing runs).

- ``shared/``: the standard library only, and the only code supervisord imports (with ``supervisord/``).
- ``host/``: what touches the machine (programs, links, nginx, databases); never the listener's or ctl's code.
- ``listener/``: the orchestrator's process; ``ctl/``: supervisorctl, the CLI and the commands admins run.
- no import circle anywhere, type-only imports included.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "supervisor_bluegreen"
TOP = "supervisor_bluegreen"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(name: str) -> tuple[set[str], set[str]]:
    """(our modules ``name`` imports, the top-level names of everything else it imports)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    ours, others = set(), set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        for target in targets:
            if target.split(".")[0] == TOP:
                while target not in MODULES:
                    target = target.rpartition(".")[0]
                if target != name:
                    ours.add(target)
            elif target != "__future__":
                others.add(target.split(".")[0])
    return ours, others


GRAPH = {name: imports(name) for name in MODULES}


def under(name: str, *folders: str) -> bool:
    return any(name == f"{TOP}.{f}" or name.startswith(f"{TOP}.{f}.") for f in folders)


def test_there_is_no_import_circle() -> None:
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            raise AssertionError("import circle: " + " -> ".join([*path[path.index(name) :], name]))
        if name in done:
            return
        for dep in sorted(GRAPH[name][0]):
            visit(dep, [*path, name])
        done.add(name)

    for name in sorted(GRAPH):
        visit(name, [])


def test_shared_is_standard_library_only_and_imports_nothing_else_of_ours() -> None:
    for name in (n for n in GRAPH if under(n, "shared")):
        ours, others = GRAPH[name]
        assert all(under(dep, "shared") for dep in ours), (name, ours)
        assert others <= set(sys.stdlib_module_names), (name, others - set(sys.stdlib_module_names))


def test_supervisord_side_imports_only_shared_and_supervisor() -> None:
    side = [n for n in GRAPH if under(n, "supervisord")] + [f"{TOP}.rpcinterface"]
    for name in side:
        ours, others = GRAPH[name]
        assert all(dep == TOP or under(dep, "shared", "supervisord") for dep in ours), (name, ours)
        assert others <= set(sys.stdlib_module_names) | {"supervisor"}, name


def test_host_never_imports_the_listener_or_ctl_and_the_listener_never_imports_ctl() -> None:
    for name, (ours, _) in GRAPH.items():
        if under(name, "host"):
            assert not [d for d in ours if under(d, "listener", "ctl", "supervisord")], name
        if under(name, "listener"):
            assert not [d for d in ours if under(d, "ctl", "supervisord")], name


def test_the_entry_points_users_configs_name_are_where_they_were() -> None:
    for entry in ("rpcinterface", "controllerplugin"):
        assert f"{TOP}.{entry}" in MODULES
    assert f"{TOP}.ctl.cli" in MODULES
    assert "bluegreen = supervisor_bluegreen.ctl.cli:main" in (PACKAGE.parent / "setup.py").read_text()
