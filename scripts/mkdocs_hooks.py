"""MkDocs hook (mkdocs.yml ``hooks:``): the "Config keys" page is generated from ``src/seqae/conf``
each time the site is built, so it lists every key with its default and its comment and cannot drift."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

CONF = Path(__file__).resolve().parents[1] / "src" / "seqae" / "conf"
PLACEHOLDER = "<!-- config-keys -->"
LINE = re.compile(r"(?P<indent>\s*)(?P<key>[\w@/.-]+):(?P<rest>.*)")


def package_of(path: Path, text: str) -> str:
    """Where a config file's keys land: its ``# @package`` line, else its group (none at the root)."""
    header = re.search(r"^# @package (\S+)", text, re.M)
    if header:
        return "" if header[1] == "_global_" else header[1]
    return "/".join(path.relative_to(CONF).parent.parts).replace("/", ".")


def config_keys(path: Path) -> list[tuple[str, str, str]]:
    """(dotted key, default, comment) for each value of a config file; its defaults list is left out."""
    text = path.read_text()
    prefix = package_of(path, text)
    rows, stack = [], []  # stack: (indent, key) of the sections above the current line
    for line in text.splitlines():
        match = LINE.match(line)
        if not match or line.lstrip().startswith(("#", "- ")):
            continue
        indent, key = len(match["indent"]), match["key"]
        value, comment = ([*re.split(r"(?:^|\s+)#\s?", match["rest"].strip(), maxsplit=1), ""])[:2]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        dotted = ".".join([prefix, *(k for _, k in stack), key]).strip(".")
        if not value.strip() or key == "defaults":
            stack.append((indent, key))
            if comment and key != "defaults":  # a section's own comment says what its keys build
                rows.append((dotted, "", comment.strip()))
            continue
        if not dotted.startswith("defaults.") and ".defaults." not in dotted:
            rows.append((dotted, value.strip(), comment.strip()))
    return rows


def escape(comment: str) -> str:
    """A comment as table text: its <placeholders> shown, not read as HTML; no cell breaks."""
    return comment.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "/")


def reference() -> str:
    parts = []
    for path in sorted(CONF.rglob("*.yaml"), key=lambda p: (len(p.relative_to(CONF).parts), str(p))):
        rows = config_keys(path)
        if not rows:
            continue
        relative = path.relative_to(CONF)
        option = (
            relative.stem
            if len(relative.parts) == 1
            else f"{'/'.join(relative.parent.parts)}={relative.stem}"
        )
        cells = "\n".join(f"| `{k}` | {f'`{v}`' if v else ''} | {escape(c)} |" for k, v, c in rows)
        parts.append(
            f"## `{option}`\n\n`src/seqae/conf/{relative}`\n\n| key | default | what it is |\n|---|---|---|\n{cells}\n"
        )
    return "\n".join(parts)


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    return markdown.replace(PLACEHOLDER, reference()) if PLACEHOLDER in markdown else markdown
