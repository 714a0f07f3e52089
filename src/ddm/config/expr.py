"""Inline expressions: compact names for many data sources and physical tables.

`expand("ds${0..3}.sbtest1_${0..7}")` is the cartesian product of every `${...}` segment, leftmost segment varying
slowest, so the result is grouped by the first segment (all of ds0's tables, then ds1's, ...):
ds0.sbtest1_0, ds0.sbtest1_1, ..., ds3.sbtest1_7.

Segments:
- `${a..b}`   integers a to b inclusive (a <= b). No zero padding (`${0..31}` gives 0, 1, ..., 31), unless the
              start is written with leading zeros: `${00..31}` gives 00, 01, ..., 31 (width of the start).
- `${[x, y]}` an explicit list; items may be quoted ('a' or "a") or bare.

Top-level commas separate alternatives that are expanded independently and concatenated:
`"ds0.t_${0..1}, ds1.t_9"` -> ds0.t_0, ds0.t_1, ds1.t_9. A `$` not followed by `{` is literal.
"""

from __future__ import annotations

import itertools
import re

# A typo such as ${0..99999999} must fail fast, not allocate a hundred million strings.
MAX_EXPANSION = 1_000_000

_RANGE = re.compile(r"\s*(\d+)\s*\.\.\s*(\d+)\s*\Z")


class ExprError(ValueError):
    """An inline expression that cannot be expanded; the message says why."""


def is_expression(text: str) -> bool:
    """True when `text` contains a `${...}` segment or a top-level comma (i.e. may expand to several names)."""
    return "${" in text or len(_split_top(text)) > 1


def expand(text: str) -> tuple[str, ...]:
    """Expand an inline expression into the list of names it stands for, in order (see module docstring)."""
    if not isinstance(text, str):
        raise ExprError(f"expected a string, got {type(text).__name__}")
    out: list[str] = []
    for part in _split_top(text):
        part = part.strip()
        if not part:
            raise ExprError(f"empty item in {text!r}")
        pieces = _parse(part)
        total = 1
        for choices in pieces:
            total *= len(choices)
        if len(out) + total > MAX_EXPANSION:
            raise ExprError(f"{text!r} expands to more than {MAX_EXPANSION} names")
        out.extend("".join(combo) for combo in itertools.product(*pieces))
    return tuple(out)


def _split_top(text: str) -> list[str]:
    """Split on commas that are outside `${...}` segments."""
    parts: list[str] = []
    depth = 0
    quote = ""
    start = 0
    i = 0
    while i < len(text):
        c = text[i]
        if depth:
            if quote:
                if c == quote:
                    quote = ""
            elif c in "'\"":
                quote = c
            elif c == "}":
                depth = 0
        elif c == "$" and text.startswith("${", i):
            depth = 1
            i += 1
        elif c == ",":
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return parts


def _parse(text: str) -> list[tuple[str, ...]]:
    """Split one alternative into literal pieces (1 choice each) and expanded segments."""
    pieces: list[tuple[str, ...]] = []
    literal_start = 0
    i = 0
    while True:
        j = text.find("${", i)
        if j < 0:
            break
        end = _segment_end(text, j + 2)
        if j > literal_start:
            pieces.append((text[literal_start:j],))
        pieces.append(_segment(text[j + 2 : end], text))
        i = literal_start = end + 1
    if literal_start < len(text):
        pieces.append((text[literal_start:],))
    return pieces


def _segment_end(text: str, start: int) -> int:
    """Index of the `}` closing a segment whose body starts at `start`; braces inside quotes do not count."""
    quote = ""
    for k in range(start, len(text)):
        c = text[k]
        if quote:
            if c == quote:
                quote = ""
        elif c in "'\"":
            quote = c
        elif c == "}":
            return k
    raise ExprError(f"unterminated '${{' in {text!r}")


def _segment(body: str, whole: str) -> tuple[str, ...]:
    m = _RANGE.match(body)
    if m:
        lo_s, hi_s = m.group(1), m.group(2)
        lo, hi = int(lo_s), int(hi_s)
        if lo > hi:
            raise ExprError(f"range ${{{body}}} in {whole!r} goes backwards ({lo} > {hi})")
        if hi - lo + 1 > MAX_EXPANSION:
            raise ExprError(f"range ${{{body}}} in {whole!r} has more than {MAX_EXPANSION} values")
        width = len(lo_s) if len(lo_s) > 1 and lo_s[0] == "0" else 0
        return tuple(str(v).zfill(width) for v in range(lo, hi + 1))
    stripped = body.strip()
    if stripped.startswith("[") and stripped.endswith("]"):
        items = _list_items(stripped[1:-1], whole)
        if not items:
            raise ExprError(f"empty list ${{{body}}} in {whole!r}")
        return tuple(items)
    raise ExprError(f"cannot expand ${{{body}}} in {whole!r}: expected ${{a..b}} or ${{[x, y]}}")


def _list_items(body: str, whole: str) -> list[str]:
    items: list[str] = []
    i, n = 0, len(body)
    while i < n:
        while i < n and body[i] in " \t":
            i += 1
        if i >= n:
            break
        if body[i] in "'\"":
            q = body[i]
            close = body.find(q, i + 1)
            if close < 0:
                raise ExprError(f"unterminated quote in {whole!r}")
            items.append(body[i + 1 : close])
            i = close + 1
            while i < n and body[i] in " \t":
                i += 1
            if i < n and body[i] != ",":
                raise ExprError(f"expected ',' after {body[:close + 1]!r} in {whole!r}")
        else:
            comma = body.find(",", i)
            comma = n if comma < 0 else comma
            item = body[i:comma].strip()
            if not item:
                raise ExprError(f"empty list item in {whole!r}")
            items.append(item)
            i = comma
        if i < n:  # at a comma
            i += 1
            if not body[i:].strip():
                raise ExprError(f"trailing ',' in list in {whole!r}")
    return items
