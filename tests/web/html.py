"""A tiny HTML tree over the standard library's parser, enough to read the pages in tests.

Also the accessible-name rule the page tests apply to every control (a subset of WAI-ARIA
"Accessible Name and Description Computation" covering what the templates use).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser

__all__ = ["Element", "accessible_name", "parse_html"]

_VOID = {
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
    "track", "wbr",
}  # fmt: skip


@dataclass
class Element:
    """One element: its tag, attributes, children (elements or text) and parent."""

    tag: str
    attrs: dict[str, str]
    children: list[Element | str] = field(default_factory=list)
    parent: Element | None = field(default=None, repr=False)

    def iter(self) -> Iterator[Element]:
        """This element and every descendant element, in document order."""
        yield self
        for child in self.children:
            if isinstance(child, Element):
                yield from child.iter()

    def find_all(self, tag: str | None = None, **attrs: str) -> list[Element]:
        """Descendants (and self) with `tag` whose attributes equal `attrs` (`class_` = class)."""
        wanted = {k.rstrip("_").replace("_", "-"): v for k, v in attrs.items()}
        return [
            e
            for e in self.iter()
            if (tag is None or e.tag == tag) and all(e.attrs.get(k) == v for k, v in wanted.items())
        ]

    def find(self, tag: str | None = None, **attrs: str) -> Element:
        """The first match of `find_all`; AssertionError when there is none."""
        found = self.find_all(tag, **attrs)
        assert found, f"no <{tag or '*'}> with {attrs}"
        return found[0]

    def by_id(self, element_id: str) -> Element | None:
        return next((e for e in self.iter() if e.attrs.get("id") == element_id), None)

    def text(self) -> str:
        """The text content, whitespace collapsed."""
        parts: list[str] = []

        def walk(node: Element) -> None:
            for child in node.children:
                if isinstance(child, str):
                    parts.append(child)
                else:
                    walk(child)

        walk(self)
        return " ".join("".join(parts).split())

    def ancestors(self) -> Iterator[Element]:
        node = self.parent
        while node is not None:
            yield node
            node = node.parent


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.current = self.root

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: v or "" for k, v in attrs}, parent=self.current)
        self.current.children.append(element)
        if tag not in _VOID:
            self.current = element

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.current.children.append(
            Element(tag, {k: v or "" for k, v in attrs}, parent=self.current)
        )

    def handle_endtag(self, tag: str) -> None:
        # Close up to the matching open element; a stray end tag is ignored.
        node: Element | None = self.current
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.current = node.parent

    def handle_data(self, data: str) -> None:
        self.current.children.append(data)


def parse_html(source: str) -> Element:
    """The document as an `Element` tree rooted at `#document`."""
    builder = _TreeBuilder()
    builder.feed(source)
    builder.close()
    return builder.root


def accessible_name(document: Element, control: Element) -> str:
    """The control's accessible name ('' when it has none).

    1. `aria-labelledby`: the text of the referenced elements.
    2. `aria-label`.
    3. Inputs and selects: a `<label for=id>`, else an enclosing `<label>`; buttons and
       `input type=submit|button|reset`: their text or `value`.
    4. `title` as the last resort.
    """
    labelledby = control.attrs.get("aria-labelledby", "").split()
    if labelledby:
        parts = [document.by_id(i) for i in labelledby]
        return " ".join(p.text() for p in parts if p is not None).strip()
    label = control.attrs.get("aria-label", "").strip()
    if label:
        return label
    if control.tag == "button":
        name = control.text()
    elif control.tag == "input" and control.attrs.get("type") in ("submit", "button", "reset"):
        name = control.attrs.get("value", "").strip()
    else:
        element_id = control.attrs.get("id")
        labels = document.find_all("label", for_=element_id) if element_id else []
        enclosing = [a for a in control.ancestors() if a.tag == "label"]
        name = " ".join(lab.text() for lab in labels + enclosing).strip()
    return name or control.attrs.get("title", "").strip()
