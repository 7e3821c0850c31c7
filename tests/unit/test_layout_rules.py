"""The package's folders say what runs where, and imports only run downward (docs/architecture.md):

    commands/, cli.py                 the command line: may import anything in the package
    sync/  verify/  serve/  push/     one deployment unit each: the shared modules only, never each other
    the other modules                 shared by all: never a deployment unit, a command, or the dev tools

These tests read each module's imports (``import x``, ``from x import y``, at any depth, lazy ones
included) rather than trusting a docstring.
"""

import ast
from pathlib import Path

import pytest

import mirrorkeeper

PACKAGE = Path(mirrorkeeper.__file__).parent
UNITS = ("sync", "verify", "serve", "push")
DEV_PACKAGE = "mirrorkeeper_dev"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, source: str) -> set[str]:
    """Every module that ``source``, as the module at ``path``, imports, resolved to absolute names."""
    found: set[str] = set()
    package = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else module_name(path)
    for node in ast.walk(ast.parse(source, str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def layer_of(module: str) -> str:
    """'sync', 'verify', 'serve', 'push', 'commands' (cli included), 'shared', or '' outside the package."""
    parts = module.split(".")
    if parts[0] != "mirrorkeeper":
        return ""
    if len(parts) == 1:
        return "shared"
    if parts[1] in (*UNITS, "commands"):
        return parts[1]
    if parts[1] in ("cli", "__main__"):
        return "commands"
    return "shared"


ALLOWED = {
    "shared": {"shared"},
    "sync": {"shared", "sync"},
    "verify": {"shared", "verify"},
    "serve": {"shared", "serve"},
    "push": {"shared", "push"},
    "commands": {"shared", "sync", "verify", "serve", "push", "commands"},
}


def violations(path: Path, source: str | None = None) -> list[str]:
    here = layer_of(module_name(path))
    found = []
    for target in sorted(imported_modules(path, path.read_text() if source is None else source)):
        if target.split(".")[0] == DEV_PACKAGE:
            found.append(f"{module_name(path)} imports the development tools ({target}), which are not shipped")
            continue
        there = layer_of(target)
        if there and there not in ALLOWED[here]:
            found.append(f"{module_name(path)} ({here}) imports {target} ({there})")
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=[module_name(p) for p in MODULES])
def test_imports_run_downward(path: Path) -> None:
    assert violations(path) == []


def test_every_module_is_in_a_known_place() -> None:
    # GIVEN the package's folders
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith("__")}
    # THEN they are the deployment units and the command line, nothing else
    assert folders == {*UNITS, "commands"}


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("sync/run.py", "from mirrorkeeper.serve.served import ServedTree\n", "imports mirrorkeeper.serve"),
        ("sync/run.py", "from mirrorkeeper.verify import workflow\n", "imports mirrorkeeper.verify"),
        ("verify/probes.py", "from mirrorkeeper.sync.planner import make_plan\n", "imports mirrorkeeper.sync"),
        ("serve/http.py", "def f():\n    import mirrorkeeper.sync.run\n", "imports mirrorkeeper.sync.run"),
        ("serve/http.py", "from ..sync import store\n", "imports mirrorkeeper.sync"),
        ("push/handler.py", "from mirrorkeeper.sync.followups import FollowUps\n", "imports mirrorkeeper.sync"),
        ("sync/followups.py", "from mirrorkeeper.push.admission import admit\n", "imports mirrorkeeper.push"),
        ("state.py", "from mirrorkeeper.commands import common\n", "imports mirrorkeeper.commands"),
        ("layout.py", "from mirrorkeeper_dev.rsyncd import RsyncDaemon\n", "development tools"),
    ],
)
def test_the_rule_catches_an_upward_import(module: str, source: str, expected: str) -> None:
    # GIVEN a module of the package that gains one forbidden import
    path = PACKAGE / module
    planted = path.read_text() + "\n" + source
    # WHEN the rule reads it as that module
    found = [line for line in violations(path, planted) if expected in line]
    # THEN it names the import
    assert found, f"{source!r} in {module} was not reported"
