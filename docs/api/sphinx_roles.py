"""Griffe extension for the API reference: Sphinx roles in docstrings become links.

Docstrings written for Sphinx say ``:class:`Grid``` or ``:func:`~.outputs.pipeline_progress```;
mkdocstrings shows those as text. Once the package is loaded this rewrites every such role into
the Markdown cross-reference mkdocstrings resolves (``[`Grid`][linmultistep.grid.Grid]``), looking
the name up as Sphinx would: relative to the object's class, module and package, then absolutely.
A name that is not rendered on any API page (private, undocumented, or from another library)
becomes a plain code span, so ``mkdocs build --strict`` never meets a dangling reference.

Configured in mkdocs.yml (``handlers: python: options: extensions``).
"""

from __future__ import annotations

import re
from pathlib import Path

import griffe

ROLE = re.compile(r":(?:py:)?(class|func|meth|mod|data|attr|exc|obj|const):`(~?)([\w.~]+)(?:\(\))?`")
API_PAGES = Path(__file__).resolve().parent


def rendered_modules(pages: Path = API_PAGES) -> set[str]:
    """The modules the API pages render (``::: module`` lines)."""
    found = set()
    for page in pages.glob("*.md"):
        found.update(m.group(1) for m in re.finditer(r"^:::\s+([\w.]+)\s*$", page.read_text(), re.M))
    return found


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx roles to mkdocstrings cross-references (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.modules = rendered_modules()

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: object) -> None:
        self.loader = loader
        self._walk(pkg)

    def _walk(self, obj: griffe.Object) -> None:
        if obj.docstring is not None and ":" in obj.docstring.value:
            obj.docstring.value = ROLE.sub(lambda m: self._link(obj, m), obj.docstring.value)
        for member in list(obj.members.values()):
            if not member.is_alias:
                self._walk(member)

    def _link(self, where: griffe.Object, m: re.Match) -> str:
        short, target = m.group(2) == "~", m.group(3)
        display = target.lstrip(".~").rsplit(".", 1)[-1] if short else target.lstrip(".")
        if m.group(1) in ("func", "meth"):
            display += "()"
        path = self._resolve(where, target)
        return f"[`{display}`][{path}]" if path else f"`{display}`"

    def _resolve(self, where: griffe.Object, target: str) -> str | None:
        module = where if where.is_module else where.module
        package = module if module.is_package or module.parent is None else module.parent
        candidates = []
        if target.startswith("."):
            base = package
            for _ in range(len(target) - len(target.lstrip(".")) - 1):
                base = base.parent or base
            candidates.append(f"{base.path}.{target.lstrip('.')}")
        else:
            scope = where if where.is_class else where.parent
            while scope is not None:
                candidates.append(f"{scope.path}.{target}")
                scope = scope.parent
            candidates += [target, f"linmultistep.{target}"]
        for path in candidates:
            obj = self._find(path)
            if obj is not None:
                return self._rendered(obj)
        return None

    def _find(self, path: str) -> griffe.Object | None:
        try:
            obj = self.loader.modules_collection.get_member(path)
        except (KeyError, ValueError, AttributeError):
            return None
        while obj is not None and obj.is_alias:
            try:
                obj = obj.final_target
            except (griffe.AliasResolutionError, griffe.CyclicAliasError):
                return None
        return obj

    def _rendered(self, obj: griffe.Object) -> str | None:
        """The object's path if an API page shows it: its module is rendered, no part of the path is
        private, and it and its parents up to the module have docstrings."""
        if obj.is_module:
            return obj.path if obj.path in self.modules else None
        module = obj.module
        if module.path not in self.modules:
            return None
        node: griffe.Object | None = obj
        while node is not None and node is not module:
            if node.name.startswith("_") or not node.docstring:
                return None
            node = node.parent
        return obj.path
