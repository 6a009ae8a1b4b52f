"""The house's edges: which module may import which (read from the source, not run).

Three floors, imports only downward: the core (``odc_ndvi_plugin`` minus ``ops/``, ``dev/``
and the CLI) <- ``ops/`` (running it in production) <- ``dev/`` (demo and test tooling)
and the CLI. Every ``import`` statement counts, those inside functions too; the CLI may
import ``dev/`` only inside a function (a command that needs it), never when it starts.
``dev/``'s archive and index tooling (:data:`DEV_WITHOUT_OPS`) serves tests and the demo
index without the ``[ops]`` extra: it takes what it shares with ``ops/`` from the core.
A private module (``_x``) belongs to its package, and a private name (``_x``) to its
module: only a private module's own package may take private names from it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "odc_ndvi_plugin"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE
DEV_WITHOUT_OPS = (f"{PACKAGE}.dev.index", f"{PACKAGE}.dev.synthetic")


@dataclass(frozen=True)
class Edge:
    importer: str  # dotted module name
    target: str  # dotted module name (for ``from m import n``: m)
    names: tuple[str, ...]  # names taken by ``from m import ...`` (empty for ``import m``)
    line: int
    in_function: bool

    def __str__(self) -> str:
        names = f" ({', '.join(self.names)})" if self.names else ""
        where = " inside a function" if self.in_function else ""
        return f"{self.importer}:{self.line} imports {self.target}{names}{where}"


class _Imports(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool):
        self.module, self.depth, self.edges = module, 0, []
        self.package = module.split(".") if is_package else module.split(".")[:-1]

    def _function(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def _add(self, target: str, names: tuple[str, ...], node: ast.stmt) -> None:
        if target == PACKAGE or target.startswith(PACKAGE + "."):
            self.edges.append(Edge(self.module, target, names, node.lineno, self.depth > 0))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, (), node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package[: len(self.package) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        names = tuple(a.name for a in node.names)
        if not node.module and node.level:  # ``from . import x``: modules x of the package
            for name in names:
                self._add(f"{target}.{name}", (), node)
        else:
            self._add(target, names, node)


def all_edges(root: Path = ROOT) -> list[Edge]:
    """Every import of a module of the package under ``root``."""
    edges = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        module = ".".join(parts[:-1] if is_package else parts)
        visitor = _Imports(module, is_package)
        visitor.visit(ast.parse(path.read_text(), str(path)))
        edges += visitor.edges
    return edges


def layer(module: str) -> str:
    """``ops``, ``dev``, ``cli`` or ``core``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ("ops", "dev", "cli") else "core"


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def wrong_edges(edges: list[Edge]) -> list[str]:
    """Every import that breaks a rule of the module doc, with the rule it breaks."""
    problems = []
    for e in edges:
        have, want = layer(e.importer), layer(e.target)
        if have == "core" and want != "core":
            problems.append(f"{e}: the core never imports {want}/")
        if have == "ops" and want in ("dev", "cli"):
            problems.append(f"{e}: ops/ never imports {want}/")
        if want == "ops" and any(_within(e.importer, m) for m in DEV_WITHOUT_OPS):
            problems.append(f"{e}: dev/'s archive and index tooling never imports ops/")
        if have == "dev" and want == "cli":
            problems.append(f"{e}: dev/ never imports the CLI")
        if have == "cli" and want == "dev" and not e.in_function:
            problems.append(f"{e}: the CLI imports dev/ only inside the commands that need it")
        # a private module belongs to its package (the package's facade exports it)
        parts = e.target.split(".")
        for i, part in enumerate(parts):
            if part.startswith("_") and not part.startswith("__"):
                owner = ".".join(parts[:i])
                if not _within(e.importer, owner):
                    problems.append(f"{e}: {'.'.join(parts[: i + 1])} is private to {owner}")
                break
        # a private name belongs to its module (or, in a private module, to its package)
        private = [n for n in e.names if n.startswith("_") and not n.startswith("__")]
        if private and e.target != e.importer:
            last = parts[-1]
            owner = ".".join(parts[:-1]) if last.startswith("_") else None
            if owner is None or not _within(e.importer, owner):
                problems.append(f"{e}: {', '.join(private)} private to {e.target}")
    return problems


def test_imports_run_only_downward():
    edges = all_edges()
    assert len(edges) > 100, "the scan found the package's imports"
    assert wrong_edges(edges) == []


def _private_third_party(root: Path = ROOT) -> list[str]:
    """Imports of odc-stats' or odc-algo's private modules, by module."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom) and not node.level
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            for name in names:
                parts = name.split(".")
                if parts[:2] in (["odc", "stats"], ["odc", "algo"]) and any(
                    p.startswith("_") for p in parts[2:]
                ):
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno} {name}")
    return found


def test_odc_stats_private_parts_are_touched_in_compat_only():
    found = _private_third_party()
    assert found and all(f.startswith(f"{PACKAGE}/_compat.py:") for f in found), found


#: the one module that tells file:// from s3:// (its Store backends and URL questions)
SCHEME_OWNERS = (f"{PACKAGE}/storage.py",)
_SCHEMES = ("s3", "file")


def _is_scheme(node: ast.AST) -> bool:
    """A literal scheme name (``"s3"``) or URL prefix (``"file://..."``), or a tuple of them."""
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_is_scheme(e) for e in node.elts)
    return isinstance(node, ast.Constant) and (
        node.value in _SCHEMES or str(node.value).startswith(tuple(f"{s}://" for s in _SCHEMES))
    )


def scheme_branches(root: Path = ROOT) -> list[str]:
    """Places outside :data:`SCHEME_OWNERS` that ask which scheme a URL has: a comparison
    with a scheme literal (``== "s3"``, ``in ("file", "s3")``) or a ``startswith`` /
    ``removeprefix`` of one."""
    found = []
    for path in sorted(root.rglob("*.py")):
        where = str(path.relative_to(root.parent))
        if where in SCHEME_OWNERS:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Compare):
                hit = any(_is_scheme(n) for n in (node.left, *node.comparators))
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                hit = node.func.attr in ("startswith", "removeprefix") and any(
                    _is_scheme(a) for a in node.args
                )
            else:
                hit = False
            if hit:
                found.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_only_storage_tells_file_from_s3():
    """The issue's "one storage abstraction": the commit, the staging sweep, the output
    probe and the readers of finished outputs go through ``storage.Store``; everything
    else asks ``storage`` (``is_s3``, ``is_store_url``, ``local_path``...)."""
    assert scheme_branches() == []


@pytest.mark.parametrize(
    "source",
    [
        'def f(url):\n    return url.startswith("s3://")',
        'def f(url):\n    return urlparse(url).scheme == "file"',
        'def f(scheme):\n    return scheme not in ("file", "s3")',
        'def f(url):\n    return url.startswith(("file://", "s3://", "/"))',
    ],
)
def test_the_scheme_rule_catches_a_branch(tmp_path, source):
    path = tmp_path / PACKAGE / "mosaic.py"
    path.parent.mkdir(parents=True)
    path.write_text(source + "\n")
    (tmp_path / PACKAGE / "storage.py").write_text(
        'def is_s3(u):\n    return u.startswith("s3://")\n'
    )
    assert len(scheme_branches(tmp_path / PACKAGE)) == 1


def test_the_cli_starts_without_dev_but_still_offers_its_commands():
    edges = [e for e in all_edges() if layer(e.importer) == "cli" and layer(e.target) == "dev"]
    assert edges and all(e.in_function for e in edges)


@pytest.mark.parametrize(
    ("source", "module", "problem"),
    [
        ("from ..ops.secrets import redact_url", "load._rio", "the core never imports ops/"),
        ("def f():\n    from .ops import runner", "api", "the core never imports ops/"),
        ("import odc_ndvi_plugin.dev.demo", "config", "the core never imports dev/"),
        ("from ..dev.index import x", "ops.runner", "ops/ never imports dev/"),
        ("from ..ops.secrets import redact_url", "dev.index", "tooling never imports ops/"),
        ("from .dev.synthetic import synth_command", "cli", "only inside the commands"),
        (
            "from ..load._rio import TRANSIENT_READ",
            "ops.retries",
            "private to odc_ndvi_plugin.load",
        ),
        ("from .commit import _commit, STAGING_DIR", "ops.sink", "_commit private to"),
    ],
)
def test_the_rules_catch_todays_old_mistakes(tmp_path, source, module, problem):
    """Each wrong edge the house had before round 4, written into a scratch package."""
    parts = [PACKAGE, *module.split(".")]
    path = tmp_path.joinpath(*parts[:-1], parts[-1] + ".py")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source + "\n")
    found = wrong_edges(all_edges(tmp_path / PACKAGE))
    assert len(found) == 1 and problem in found[0], found


def test_allowed_edges_pass(tmp_path):
    for module, source in [
        ("cli", "def run():\n    from .dev.demo import run_demo"),
        ("ops.runner", "from .._transient import retry_reason\nfrom ..load import read_scene"),
        ("load._direct", "from ._rio import _Source"),
        ("dev.demo", "from ..ops.runner import execute"),
    ]:
        parts = [PACKAGE, *module.split(".")]
        path = tmp_path.joinpath(*parts[:-1], parts[-1] + ".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source + "\n")
    assert len(all_edges(tmp_path / PACKAGE)) == 5
    assert wrong_edges(all_edges(tmp_path / PACKAGE)) == []
