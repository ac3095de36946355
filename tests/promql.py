"""The metric names a PromQL expression reads, for checking each of them on its own.

A hand-written scan rather than a parser: strings, comments, label matchers, ranges and
label lists (``by (...)``, ``on (...)``, ...) are removed, and what is left is a metric
name if it is an identifier that is neither a keyword nor a function (called with ``(``).
That is enough for the expressions of prometheus/rules/ and grafana/dashboards/; a
selector by ``{__name__="..."}`` counts too.
"""

from __future__ import annotations

import re

KEYWORDS = frozenset(
    {
        # binary operators and modifiers
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "atan2",
        # aggregation operators: also written `sum by (x) (...)`, with no `(` right after the name
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
        # number literals
        "inf",
        "nan",
    }
)
# Strings and comments in one pass, so that neither a `#` in a string nor a quote in a
# comment is misread.
STRING_OR_COMMENT = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'|`[^`]*`|#[^\n]*')
NAME_MATCHER = re.compile(r"__name__\s*=\s*$")
BRACES = re.compile(r"\{[^{}]*\}")
BRACKETS = re.compile(r"\[[^\[\]]*\]")
LABEL_LIST = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.I)
# A number (with a duration unit or exponent) is one token, so that `5m` yields no `m`.
TOKEN = re.compile(r"(?P<number>\d[\w.]*)|(?P<ident>[A-Za-z_:][\w:]*)(?P<call>\s*\()?")


def metric_names(expr: str) -> set[str]:
    """Every metric name ``expr`` selects."""
    names: set[str] = set()
    text = STRING_OR_COMMENT.sub(lambda m: _blank(m, expr, names), expr)
    text = BRACES.sub(" ", text)
    text = BRACKETS.sub(" ", text)
    text = LABEL_LIST.sub(" ", text)
    for token in TOKEN.finditer(text):
        ident = token.group("ident")
        if ident and not token.group("call") and ident.lower() not in KEYWORDS:
            names.add(ident)
    return names


def _blank(match: re.Match[str], expr: str, names: set[str]) -> str:
    """A string or comment made harmless; the string of a ``__name__="x"`` matcher adds ``x``."""
    literal = match.group(0)
    if literal.startswith("#"):
        return " "
    if NAME_MATCHER.search(expr, 0, match.start()):
        names.add(literal[1:-1])
    return '""'
