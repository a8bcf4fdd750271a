"""A Griffe extension that turns the reST markup of sqla_notify's docstrings into Markdown.

The docstrings are Sphinx style: griffe's ``sphinx`` parser reads their field lists
(``:param x:``, ``:raises Y:``), but hands the prose to Markdown as it is, where roles
(``:class:`~sqla_notify.Hub```), ``.. code-block::`` directives, ``::`` literal blocks and
underlined section titles would show as raw text. Rewriting them here, when the docs are
built, keeps the docstrings as they are for ``help()`` and editors (mkdocstrings' maintainers
suggest a Griffe extension for exactly this: mkdocstrings discussion #596).

Roles become links when they name a public object by its full path (``sqla_notify.X``), so
that ``mkdocs build --strict`` checks them; any other role becomes inline code.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from collections.abc import Iterator
from typing import Any, Callable

from griffe import Alias, Attribute, Docstring, Extension, Module, Object

# :class:`~sqla_notify.Hub`, :meth:`.Hub.subscribe`, :func:`_written`, :mod:`._bulk` ...
_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|mod|data|exc|obj|const|type):`([^`]+)`")
_DIRECTIVE = re.compile(r"^(\s*)\.\. code-block::\s*(\w*)\s*$")
_ADMONITION = re.compile(r"^(\s*)\.\. (note|warning|tip|important|caution|danger|seealso)::\s*(.*)$")
_TITLE_UNDERLINE = re.compile(r"^(=+|-+|~+)\s*$")
_LIST_ITEM = re.compile(r"^((?:\d+\.|[*-]) )")
_HEADING_LEVEL = {"=": "###", "-": "####", "~": "#####"}
# ":raises A, B: why" (Sphinx accepts it, griffe's parser wants one type per field)
_RAISES_SEVERAL = re.compile(r"^(\s*):raises ([\w.]+(?:, [\w.]+)+):(.*)$", re.M)


def _exported() -> frozenset[str]:
    """``sqla_notify.__all__``, read from the source so that new names link by themselves."""
    tree = ast.parse((Path(__file__).parent.parent / "sqla_notify" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in node.targets):
            return frozenset(ast.literal_eval(node.value))
    return frozenset()


_EXPORTED = _exported()


def _role(match: re.Match[str], exists: Callable[[str], bool]) -> str:
    target = match.group(1).strip()
    shown = target
    if "<" in target and target.endswith(">"):  # :class:`text <target>`
        shown, target = (part.strip() for part in target[:-1].split("<", 1))
    elif target.startswith("~"):  # ~a.b.C shows as C
        target = target[1:]
        shown = target.rsplit(".", 1)[-1]
    target = target.lstrip(".")
    if target.split(".", 1)[0] in _EXPORTED:  # :class:`Hub`, :meth:`Hub.subscribe`
        target = "sqla_notify." + target
    if exists(target):
        return f"[`{shown}`][{target}]"
    return f"`{shown.lstrip('.')}`"


def _blocks(lines: list[str]) -> list[str]:
    """Directives and ``::`` paragraphs become fenced code blocks."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        admonition = _ADMONITION.match(line)
        if admonition:  # ".. note:: text" and its indented body: a Material admonition
            indent, kind, first = admonition.groups()
            out.append(f"{indent}!!! {'info' if kind == 'seealso' else kind}")
            note = [first] if first else []
            i += 1
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith(indent + " ")):
                note.append(lines[i].strip())
                i += 1
            while note and not note[-1]:
                note.pop()
            out += ["", *(f"{indent}    {b}" if b else "" for b in note), ""]
            continue
        directive = _DIRECTIVE.match(line)
        literal = line.rstrip().endswith("::") and not line.strip().startswith("..")
        if directive or literal:
            indent = directive.group(1) if directive else re.match(r"\s*", line).group(0)  # type: ignore[union-attr]
            language = directive.group(2) if directive else "text"
            if literal:
                text = line.rstrip()[:-2].rstrip()
                # "Example::" shows as "Example:"; a lone "::" shows nothing.
                out.append(text + ":" if text and not text.endswith(":") else text)
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            body: list[str] = []
            while j < len(lines) and (not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > len(indent)):
                body.append(lines[j])
                j += 1
            while body and not body[-1].strip():
                body.pop()
            if body:
                margin = min(len(b) - len(b.lstrip()) for b in body if b.strip())
                out += ["", f"{indent}```{language}"]
                out += [indent + b[margin:] if b.strip() else "" for b in body]
                out += [f"{indent}```", ""]
                i = j
                continue
        out.append(line)
        i += 1
    return out


def _titles(lines: list[str]) -> list[str]:
    """Underlined section titles become Markdown headings, below the object's own."""
    out: list[str] = []
    for line in lines:
        underline = _TITLE_UNDERLINE.match(line)
        if underline and out and out[-1].strip() and len(line.strip()) >= len(out[-1].strip()):
            out[-1] = f"{_HEADING_LEVEL[line.strip()[0]]} {out[-1].strip()}"
            continue
        out.append(line)
    return out


def _lists(lines: list[str]) -> list[str]:
    """reST indents a list item's later paragraphs by the marker's width (3 spaces after
    ``1.``); Python-Markdown wants 4, or the paragraph leaves the list and the numbering
    restarts."""
    out: list[str] = []
    width = 0
    for line in lines:
        item = _LIST_ITEM.match(line)
        if item:
            width = len(item.group(1))
        elif line.strip() and not line.startswith(" "):
            width = 0
        elif width and line.startswith(" " * width) and width < 4:
            line = " " * (4 - width) + line
        out.append(line)
    return out


def convert(text: str, exists: Callable[[str], bool] = lambda target: False) -> str:
    """``text``, a docstring in reST, as Markdown (its field lists left for the parser).
    A role becomes a link when ``exists(its target)``, else inline code."""
    lines = _lists(_titles(_blocks(text.splitlines())))
    text = _ROLE.sub(lambda match: _role(match, exists), "\n".join(lines))
    return _RAISES_SEVERAL.sub(_raises, text)


def _raises(match: re.Match[str]) -> str:
    indent, names, why = match.groups()
    return "\n".join(f"{indent}:raises {name}:{why}" for name in names.split(", "))


class RstToMarkdown(Extension):
    """Rewrites every docstring of the package once it is loaded."""

    def on_package(self, *, pkg: Module, **kwargs: Any) -> None:
        """Convert the docstrings of ``pkg`` and everything in it, in place."""
        objects = list(_walk(pkg))
        for obj in objects:  # first, so that links to #:-documented attributes resolve
            if obj.docstring is None and isinstance(obj, Attribute):
                _comment_docstring(obj)

        def exists(target: str) -> bool:
            # Rendered, so a link resolves: public, and with a docstring (mkdocs.yml shows
            # nothing without one).
            if not target.startswith("sqla_notify.") or any(p.startswith("_") for p in target.split(".")):
                return False
            try:
                return pkg[target.removeprefix("sqla_notify.")].docstring is not None
            except Exception:  # griffe raises KeyError, or alias resolution errors
                return False

        for obj in objects:
            if obj.docstring is not None:
                obj.docstring.value = convert(obj.docstring.value, exists)


def _walk(obj: Object) -> Iterator[Object]:
    yield obj
    for member in obj.members.values():
        if not isinstance(member, Alias):
            yield from _walk(member)


def _comment_docstring(attr: Attribute) -> None:
    """Sphinx documents an attribute by the ``#:`` comment lines above it (the stats records
    and ``sqla_notify.types`` do so); griffe reads only a string below it."""
    if attr.lineno is None or attr.filepath is None or isinstance(attr.filepath, list):
        return
    lines = attr.lines_collection[attr.filepath]
    comment: list[str] = []
    number = attr.lineno - 2  # 0-based index of the line above
    while number >= 0 and lines[number].strip().startswith("#:"):
        comment.insert(0, lines[number].strip()[2:].strip())
        number -= 1
    if comment:
        attr.docstring = Docstring("\n".join(comment), lineno=attr.lineno, parent=attr)
