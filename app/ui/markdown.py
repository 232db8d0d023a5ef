"""Model output as sanitized markdown: HTML for a read-only QTextBrowser, never live HTML.

Everything the model writes is untrusted.  The renderer (markdown-it-py, CommonMark + tables and
strikethrough) runs with ``html=False`` so raw HTML in the text comes out escaped, as visible text.
On top of that:

- links keep only ``http``, ``https`` and ``mailto`` targets; anything else is shown as its text.
  The view never follows a link by itself (``QTextBrowser.setOpenLinks(False)``);
- images are never loaded (a QTextDocument would read local files named by ``src``): they are
  shown as their alt text in brackets;
- fenced and indented code becomes a shaded ``<pre>`` block.

:func:`split_stable` lets a streaming view re-render only the growing tail of a message.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.token import Token

_SAFE_SCHEMES = ("http://", "https://", "mailto:")
_CODE_BG = "rgba(127,127,127,0.14)"
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})", re.MULTILINE)


def _validate_link(url: str) -> bool:
    return url.strip().lower().startswith(_SAFE_SCHEMES)


def _code_block(content: str, info: str = "") -> str:
    # A one-cell table is the block that Qt's rich-text engine shades reliably across the width.
    label = ""
    lang = info.strip().split(" ")[0] if info else ""
    if lang:
        label = f'<div style="color:gray; font-size:small;">{html.escape(lang)}</div>'
    body = html.escape(content.rstrip("\n"))
    return (
        f'<table width="100%" cellpadding="8" cellspacing="0" style="background-color:{_CODE_BG};'
        f' margin-top:4px; margin-bottom:4px;"><tr><td>{label}'
        f'<pre style="margin:0; white-space:pre-wrap;">{body}</pre></td></tr></table>\n'
    )


def _fence(self: Any, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
    token = tokens[idx]
    return _code_block(token.content, token.info)


def _code_block_rule(self: Any, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
    return _code_block(tokens[idx].content)


def _image(self: Any, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
    token = tokens[idx]
    alt = "".join(child.content for child in token.children or []) or "image"
    return html.escape(f"[{alt}]")


def _make() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable(["table", "strikethrough"])
    md.validateLink = _validate_link  # type: ignore[method-assign]
    md.add_render_rule("fence", _fence)
    md.add_render_rule("code_block", _code_block_rule)
    md.add_render_rule("image", _image)
    return md


_MD = _make()


def render(text: str) -> str:
    """Markdown -> safe HTML (see the module docstring)."""
    return _MD.render(text)


def _scan(text: str) -> tuple[int, str]:
    """(end of the last blank line outside a code fence, the opening line of a fence left open)."""
    opener = ""
    fence = ""
    cut = 0
    pos = 0
    for line in text.splitlines(keepends=True):
        pos += len(line)
        m = _FENCE.match(line)
        if m:
            marker = m.group(1)
            if not opener:
                opener, fence = line if line.endswith("\n") else line + "\n", marker
            elif (
                marker[0] == fence[0]
                and len(marker) >= len(fence)
                and not line.strip()[len(marker) :].strip(marker[0])
            ):
                opener = ""
            continue
        if not opener and not line.strip() and line.endswith("\n"):
            cut = pos
    return cut, opener


def split_stable(text: str) -> int:
    """Where the finished part of a growing markdown text ends (0: nothing is finished yet).

    The cut is the last blank line that is outside a code fence, so everything before it renders
    the same however the text goes on (reference-style links aside, which models rarely write).
    """
    return _scan(text)[0]


def force_split(text: str) -> tuple[str, str]:
    """Cut a long unfinished block in two: (finished markdown, the rest to keep growing).

    For a paragraph that never ends or a code block that never closes: inside a fence, the cut is
    at the last line break and the code block is closed there and reopened in the rest (two
    shaded blocks, one under the other); elsewhere at the last line break, else the last space
    (a soft line break or a space becomes a paragraph break -- the price of never re-rendering a
    whole long reply).
    """
    _cut, opener = _scan(text)
    if opener:
        start = text.find(opener) + len(opener)
        at = text.rfind("\n", start)
        if at < start:
            return "", text
        fence = _FENCE.match(opener).group(1)  # type: ignore[union-attr]
        return text[: at + 1] + fence + "\n", opener + text[at + 1 :]
    at = text.rfind("\n")
    if at <= 0:
        at = text.rfind(" ")
    if at <= 0:
        at = len(text) - 1
    return text[: at + 1], text[at + 1 :]
