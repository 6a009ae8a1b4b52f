"""Sphinx directives that read the code, so the guide states each fact once.

``.. plugin-config-keys::`` (reStructuredText: in a MyST page, inside ``{eval-rst}``) renders every ``plugin_config`` key from ``NDVIConfig``: one row
per dataclass field (its name, default and field docstring, read with Sphinx's own
``ModuleAnalyzer``, as autodoc reads attribute docstrings). A field without a docstring, or
a ``plugin_config`` key (``NDVIConfig.keys()``) that is neither a field nor named in some
field's docstring, is a warning: the guide build (warnings as errors) fails on it.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
from collections.abc import Mapping
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
    return "\n       ".join(doc.splitlines())


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("plugin-config-keys", PluginConfigKeys)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
