"""What a mail client shows of an HTML part, and rewriting an address there.

HTML is parsed by Lexbor (selectolax), an HTML5 parser: entities, comments, foster parenting of
stray table text and implied elements are resolved the way a browser resolves them. Three views
are compared (``address_forms``), each a necessary condition the next does not replace:

1. the source with references decoded: an address in an attribute (``href="mailto:..."``,
   ``alt``, ``title``), a comment or plain text, however its characters are escaped;
2. the text of every text node, joined with nothing in between: an address split by empty
   elements, comments, ``<wbr>`` or across elements. Block boundaries join with nothing too,
   since CSS can make any block inline;
3. the same without elements a reader does not see: ``head``, ``style``, ``script``,
   ``template``, elements with the ``hidden`` attribute or hidden by an inline style or a
   ``<style>`` rule (``display:none``, ``visibility:hidden``, ``font-size:0``, ``opacity:0``,
   ``max-height:0``, ``mso-hide:all``, far negative offsets): hidden junk between two halves.

A match is rewritten in the tree: the first text node of the match gets the alias, the others
lose their share of it, elements between them stay; an attribute or a comment holding the
address is rewritten or removed. The tree is then serialised (only a part that changed) and
checked again: what still shows an address is refused by the caller. Not rendered here: CSS
generated content (``::before { content: ... }``), reordering by CSS (flex ``order``,
positioning) and bidi overrides; their text is still in views 1 and 2, unjoined.
"""

from __future__ import annotations

import re

from selectolax.lexbor import LexborHTMLParser, LexborNode, SelectolaxError

from mailveil.relay.address_forms import (
    AT_GATE,
    Folded,
    Matcher,
    fold,
    fold_map,
    reader_view,
    replace_spans,
)

_NOT_SHOWN = ("head", "title", "style", "script", "template")
_HIDING = re.compile(
    r"display\s*:\s*none|visibility\s*:\s*(?:hidden|collapse)|mso-hide\s*:\s*all"
    r"|(?:font-size|opacity|(?:max-)?height|(?:max-)?width|line-height)\s*:\s*[-+]?0*\.?0*(?![\d.]*[1-9])"
    r"(?:[a-z%]*)\s*(?:!important\s*)?(?:;|$|\})"
    r"|(?:text-indent|left|top|margin-left|margin-top)\s*:\s*-\d{3,}"
    r"|color\s*:\s*transparent",
    re.IGNORECASE,
)
_MAY_HIDE = ", ".join(
    f'[style*="{word}" i]'
    for word in (
        "display",
        "visibility",
        "mso-hide",
        "font-size",
        "opacity",
        "height",
        "width",
        "indent",
        "left",
        "top",
        "transparent",
    )
)
_RULE = re.compile(r"([^{}]+)\{([^{}]*)\}")
_CSS_COMMENT = re.compile(r"/\*.*?\*/", re.DOTALL)
_DOCTYPE = re.compile(r"\A\s*(<!doctype[^>]*>)", re.IGNORECASE)


def _hidden(tree: LexborHTMLParser) -> list[LexborNode]:
    """Elements a reader does not see, outermost only (document order)."""
    found: list[LexborNode] = []
    for tag in _NOT_SHOWN:
        found += tree.css(tag)
    found += tree.css("[hidden]")
    # Lexbor narrows to the styles that name a hiding property; the regex decides on those.
    styled = tree.css(_MAY_HIDE)
    found += [n for n in styled if _HIDING.search(n.attributes.get("style") or "")]
    for style in tree.css("style"):
        sheet = _CSS_COMMENT.sub("", style.text(deep=True))
        for selector, declarations in _RULE.findall(sheet):
            if not _HIDING.search(declarations + ";"):
                continue
            for one in selector.split(","):
                try:
                    found += tree.css(one.strip())
                except SelectolaxError:
                    continue  # Pseudo-elements and selectors Lexbor cannot evaluate.
    ids = {node.mem_id for node in found}
    outermost: dict[int, LexborNode] = {}
    for node in found:
        parent = node.parent
        while parent is not None and parent.mem_id not in ids:
            parent = parent.parent
        if parent is None:
            outermost[node.mem_id] = node
    return list(outermost.values())


def html_shows(source: str, matcher: Matcher) -> bool:
    """Whether any of the three views (module docstring) shows a matched address."""
    if not AT_GATE.search(source):
        return False  # Nothing can show "@": the cheap necessary condition.
    if matcher.found(reader_view(source)):
        return True
    tree = LexborHTMLParser(source)
    if matcher.found(fold(tree.root.text(separator="") if tree.root else "")):
        return True
    hidden = _hidden(tree)
    if not hidden:
        return False
    for node in hidden:
        node.decompose()
    return matcher.found(fold(tree.root.text(separator="") if tree.root else ""))


def _texts(tree: LexborHTMLParser, visible_only: bool) -> list[LexborNode]:
    if tree.root is None:
        return []
    skip = {n.mem_id for n in _hidden(tree)} if visible_only else set()
    out: list[LexborNode] = []
    for node in tree.root.traverse(include_text=True):
        if not node.is_text_node:
            continue
        parent = node.parent
        while skip and parent is not None and parent.mem_id not in skip:
            parent = parent.parent
        if not skip or parent is None:
            out.append(node)
    return out


def _joined(pieces: list[str]) -> tuple[Folded, list[int], list[int]]:
    """One ``Folded`` over the pieces joined, the folded position of each piece's edge, and
    each piece's source offset."""
    starts: list[int] = []
    spans: list[tuple[int, int]] = []
    exact: list[bool] = []
    texts: list[str] = []
    barriers: list[int] = []
    offsets: list[int] = []
    source_at = folded_at = 0
    for piece in pieces:
        one = fold_map(piece, entities=False, percent=True)
        starts += [folded_at + s for s in one.starts]
        spans += [(source_at + a, source_at + b) for a, b in one.spans]
        exact += one.exact
        texts.append(one.text)
        offsets.append(source_at)
        source_at += len(piece)
        folded_at += len(one.text)
        barriers.append(folded_at)
    return Folded("".join(pieces), "".join(texts), starts, spans, exact), barriers, offsets


def _rewrite_texts(tree: LexborHTMLParser, matcher: Matcher, visible_only: bool) -> bool:
    nodes = _texts(tree, visible_only)
    pieces = [node.text_content or "" for node in nodes]
    folded, barriers, offsets = _joined(pieces)
    spans = matcher.spans(folded, barriers)
    if not spans:
        return False
    edits: dict[int, list[tuple[int, int, str]]] = {}
    for start, end, alias in spans:
        first = True
        for index, offset in enumerate(offsets):
            stop = offset + len(pieces[index])
            if stop <= start or offset >= end or (stop == offset and not first):
                continue
            local = (max(start, offset) - offset, min(end, stop) - offset)
            edits.setdefault(index, []).append((*local, alias if first else ""))
            first = False
    for index, changes in edits.items():
        nodes[index].replace_with(replace_spans(pieces[index], changes))
    return True


def _rewrite_attributes_and_comments(tree: LexborHTMLParser, matcher: Matcher) -> None:
    if tree.root is None:
        return
    doomed: list[LexborNode] = []
    unwrapped: list[LexborNode] = []
    for node in tree.root.traverse(include_text=False):
        if node.is_comment_node:
            if matcher.found(reader_view(node.comment_content or "")):
                doomed.append(node)
            continue
        if matcher.found(reader_view(node.tag or "")):
            unwrapped.append(node)  # ``<ada@example.net>`` parses as an element of that name.
        for name, value in list(node.attributes.items()):
            if matcher.found(reader_view(name)):
                del node.attrs[name]
                continue
            if not value or not AT_GATE.search(value):
                continue
            spans = matcher.spans(fold_map(value, entities=False, percent=True))
            if spans:
                node.attrs[name] = replace_spans(value, spans)
    for node in doomed:
        node.decompose()  # A comment holding an address: nothing a reader misses.
    for node in reversed(unwrapped):
        node.unwrap(delete_empty=True)  # A tag name is not shown; its content stays.


def rewrite_html(source: str, matcher: Matcher) -> str:
    """``source`` with every matched address shown in it rewritten to its alias (module
    docstring). The caller checks the result again with ``html_shows``."""
    tree = LexborHTMLParser(source)
    _rewrite_attributes_and_comments(tree, matcher)
    _rewrite_texts(tree, matcher, visible_only=False)
    _rewrite_texts(tree, matcher, visible_only=True)
    out = tree.html or ""
    doctype = _DOCTYPE.match(source)
    if doctype and out.lower().startswith("<!doctype html>"):
        # Lexbor writes every doctype as the HTML5 one; the original keeps the rendering mode.
        out = doctype.group(1) + out[len("<!doctype html>") :]
    return out


__all__ = ["html_shows", "rewrite_html"]
