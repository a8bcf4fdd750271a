"""The docs build's reST-to-Markdown step (``docs/griffe_rst.py``), on the markup our
docstrings use. ``mkdocs build --strict`` (scripts/test.sh) checks the whole site; these pin
what each rewrite produces, so a docstring that renders as raw reST cannot slip through."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("griffe", reason="the docs extra is not installed: pip install -e '.[docs]'")


def _extension() -> ModuleType:
    path = Path(__file__).parent.parent / "docs" / "griffe_rst.py"
    spec = importlib.util.spec_from_file_location("griffe_rst", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


convert = _extension().convert


def test_roles_become_links_to_rendered_objects_and_code_otherwise() -> None:
    exists = {"sqla_notify.Hub", "sqla_notify.Hub.subscribe", "sqla_notify.fastapi.Credentials"}.__contains__
    text = (
        ":class:`~sqla_notify.Hub`, :meth:`Hub.subscribe`, :class:`sqla_notify.fastapi.Credentials`, "
        ":func:`_written`, :mod:`._bulk`, :attr:`NotifyOptions.exclude`"
    )
    assert convert(text, exists) == (
        "[`Hub`][sqla_notify.Hub], [`Hub.subscribe`][sqla_notify.Hub.subscribe], "
        "[`sqla_notify.fastapi.Credentials`][sqla_notify.fastapi.Credentials], "
        "`_written`, `_bulk`, `NotifyOptions.exclude`"
    )


def test_code_block_directives_and_literal_paragraphs_become_fences() -> None:
    text = "Use it:\n\n.. code-block:: python\n\n    hub = Hub()\n\nSends::\n\n    {\"type\": \"welcome\"}\n\nEnd."
    assert convert(text) == (
        "Use it:\n\n\n```python\nhub = Hub()\n```\n\n"
        "Sends:\n\n```text\n{\"type\": \"welcome\"}\n```\n\nEnd."
    )


def test_underlined_titles_become_headings_below_the_objects_own() -> None:
    assert convert("Guide\n=====\n\nText\n\nPart\n----") == "### Guide\n\nText\n\n#### Part"


def test_a_list_items_later_paragraphs_stay_in_the_item() -> None:
    text = "1. **Flush**. First.\n\n   More about it.\n\n2. Next."
    assert convert(text) == "1. **Flush**. First.\n\n    More about it.\n\n2. Next."


def test_several_exception_types_in_one_raises_field_are_split() -> None:
    assert convert(":raises ValueError, TypeError: for a bad name.") == (
        ":raises ValueError: for a bad name.\n:raises TypeError: for a bad name."
    )


def test_note_and_warning_directives_become_admonitions() -> None:
    text = "Before.\n\n.. warning:: Unsafe with cookies.\n   Really.\n\nAfter."
    assert convert(text) == "Before.\n\n!!! warning\n\n    Unsafe with cookies.\n    Really.\n\nAfter."
