"""Sphinx directives that read the code, so the guide states each fact once.

``.. plugin-config-keys::`` (reStructuredText: in a MyST page, inside ``{eval-rst}``) renders every ``plugin_config`` key from ``NDVIConfig``: one row
per dataclass field (its name, default and field docstring, read with Sphinx's own
``ModuleAnalyzer``, as autodoc reads attribute docstrings). A field without a docstring, or
a ``plugin_config`` key (``NDVIConfig.keys()``) that is neither a field nor named in some
field's docstring, is a warning: the guide build (warnings as errors) fails on it.

``.. mapping-table:: module.NAME`` renders a mapping of the code as a table (the keyword
table of ``seasonal_ndvi``, ``api.KEYWORDS``, and what it cannot honour, ``api.NOT_HONOURED``).

``.. module-map:: odc_ndvi_plugin`` lists every module by layer with its docstring's first
paragraph (the development page's layout, which so follows the house moves).
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import inspect
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.pycode import ModuleAnalyzer
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)


def _plain(value: Any) -> Any:
    """A default as a user writes it in YAML: mappings, lists, scalars."""
    if hasattr(value, "to_config"):
        return _plain(value.to_config())
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    return value


def _yaml_inline(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_yaml_inline(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_yaml_inline(v) for v in value) + "]"
    return str(value)


def field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return _plain(f.default)
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return _plain(f.default_factory())  # type: ignore[misc]
    return dataclasses.MISSING


def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a class's fields (string after the field, or ``#:``)."""
    analyzer = ModuleAnalyzer.for_module(cls.__module__)
    found = analyzer.find_attr_docs()
    return {
        name: inspect.cleandoc("\n".join(lines))
        for (owner, name), lines in found.items()
        if owner == cls.__qualname__
    }


class PluginConfigKeys(SphinxDirective):
    """Table of ``NDVIConfig``'s fields: key, default, meaning (the field docstring)."""

    has_content = False
    option_spec = {"class": lambda s: s.strip()}

    def run(self) -> list[nodes.Node]:
        from importlib import import_module

        path = self.options.get("class", "odc_ndvi_plugin.config.NDVIConfig")
        module, _, name = path.rpartition(".")
        cls = getattr(import_module(module), name)
        self.env.note_dependency(import_module(module).__file__)
        docs = field_docs(cls)
        fields = [f for f in dataclasses.fields(cls) if f.init]
        where = self.get_location()
        lines = [
            ".. list-table::",
            "   :header-rows: 1",
            "   :widths: 18 22 60",
            "",
            "   * - key",
            "     - default",
            "     - meaning",
        ]
        for f in fields:
            doc = docs.get(f.name)
            if not doc:
                logger.warning(
                    "%s.%s has no field docstring (plugin_config key %r)",
                    path,
                    f.name,
                    f.name,
                    location=where,
                )
                doc = "(undocumented)"
            default = field_default(f)
            shown = "(required)" if default is dataclasses.MISSING else _yaml_inline(default)
            lines += [f"   * - ``{f.name}``", f"     - ``{shown}``", "     - " + _indent(doc)]
        keys = getattr(cls, "keys", None)
        if callable(keys):
            named = {f.name for f in fields}
            text = "\n".join(docs.values())
            for key in keys():
                if key not in named and f"``{key}``" not in text:
                    logger.warning(
                        "plugin_config key %r is neither a field of %s nor named in a field "
                        "docstring",
                        key,
                        path,
                        location=where,
                    )
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source=where), self.content_offset, container)
        return container.children


def _indent(doc: str) -> str:
    """A docstring as a list-table cell: each paragraph on one line (a literal broken
    across lines would keep the break's indentation as spaces)."""
    paragraphs = [" ".join(par.split()) for par in doc.split("\n\n") if par.strip()]
    return "\n\n       ".join(paragraphs)


class MappingTable(SphinxDirective):
    """``.. mapping-table:: module.NAME``: a two-column table of a mapping in the code
    (key as literal, value as reStructuredText), e.g. ``seasonal_ndvi``'s keyword table."""

    required_arguments = 1
    option_spec = {"header": lambda s: [part.strip() for part in s.split(",")]}

    def run(self) -> list[nodes.Node]:
        from importlib import import_module

        module, _, name = self.arguments[0].rpartition(".")
        table = getattr(import_module(module), name)
        self.env.note_dependency(import_module(module).__file__)
        key_title, value_title = self.options.get("header", ["key", "meaning"])
        lines = [".. list-table::", "   :header-rows: 1", "   :widths: 25 75", ""]
        lines += [f"   * - {key_title}", f"     - {value_title}"]
        for key, value in table.items():
            lines += [f"   * - ``{key}``", "     - " + _indent(inspect.cleandoc(value))]
        container = nodes.container()
        where = self.get_location()
        self.state.nested_parse(StringList(lines, source=where), self.content_offset, container)
        return container.children


class ModuleMap(SphinxDirective):
    """``.. module-map:: package``: every module of the package (read with ``ast``, not
    imported) and the first paragraph of its docstring, in layer order: the core, ``ops/``,
    ``dev/``, the CLI. It follows the tree as modules move. The docstrings are shown as
    text with their ``literals`` (not parsed as reStructuredText), so a module's docstring
    can never break the guide's build."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        from importlib.util import find_spec

        spec = find_spec(self.arguments[0])
        root = Path(spec.origin).parent  # type: ignore[union-attr,arg-type]
        rows = []
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root)
            name = str(rel)
            if rel.name == "__init__.py" and rel.parent != Path("."):
                name = f"{rel.parent}/"  # a package: its __init__'s docstring
            doc = ast.get_docstring(ast.parse(path.read_text()), clean=True) or "-"
            self.env.note_dependency(str(path))
            first = " ".join(doc.strip().split("\n\n")[0].split())
            rows.append((_layer(rel), name, first))
        rows.sort(key=lambda r: (_LAYERS.index(r[0]), r[1]))
        return [_table(("layer", "module", "what it is"), (12, 28, 60), rows)]


def _inline(text: str) -> list[nodes.Node]:
    """``literal`` spans and :role:`target` references as literals, the rest as text."""
    text = re.sub(r":[a-z]+(?::[a-z]+)?:`~?([^`]+)`", r"``\1``", text)
    parts = text.split("``")
    return [nodes.literal(p, p) if i % 2 else nodes.Text(p) for i, p in enumerate(parts) if p]


def _table(header: tuple[str, ...], widths: tuple[int, ...], rows: list[tuple[str, ...]]):
    table = nodes.table()
    group = nodes.tgroup(cols=len(header))
    table += group
    for width in widths:
        group += nodes.colspec(colwidth=width)

    def row(cells: tuple[str, ...], literal_first: int) -> nodes.row:
        out = nodes.row()
        for n, text in enumerate(cells):
            para = nodes.paragraph()
            para += [nodes.literal(text, text)] if n == literal_first else _inline(text)
            out += nodes.entry("", para)
        return out

    head = nodes.thead()
    head += row(header, -1)
    body = nodes.tbody()
    for cells in rows:
        body += row(cells, 1)
    group += [head, body]
    return table


_LAYERS = ("core", "ops", "dev", "cli")


def _layer(rel: Path) -> str:
    top = rel.parts[0].removesuffix(".py")
    return top if top in _LAYERS else "core"


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("plugin-config-keys", PluginConfigKeys)
    app.add_directive("mapping-table", MappingTable)
    app.add_directive("module-map", ModuleMap)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
