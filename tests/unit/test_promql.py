"""The metric-name extractor the live Prometheus test uses (tests/promql.py)."""

from __future__ import annotations

import pytest
from promql import metric_names


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up", {"up"}),
        ('up{job=~"inference|features"} == 0', {"up"}),
        # functions and aggregations are not metrics; label lists and ranges are not either
        (
            'histogram_quantile(0.99, sum by (service, le) (rate(x_seconds_bucket{service=~"a"}[5m])))',
            {"x_seconds_bucket"},
        ),
        ("sum(rate(a_total[1m])) by (job) / on (job) group_left (model) b_info", {"a_total", "b_info"}),
        ("max without (instance) (a) or ignoring (code) b unless c", {"a", "b", "c"}),
        ("(a == bool 0) * b > 0.05", {"a", "b"}),
        # the ModelLoadRefused shape: `offset`, its duration, and `or 0 * ...` fallbacks
        (
            "sum by (job, code) ((f_total unless f_total offset 5m) and on (job, instance) (up offset 5m)"
            ' or increase(f_total[5m]) or 0 * s_up{service=~"inference|retraining"}) > 0',
            {"f_total", "up", "s_up"},
        ),
        # label values and comments hold anything, including what looks like names and brackets
        ('a{code="b (c) [d] {e}", x!~\'y"z\'} # sum(commented_out)', {"a"}),
        ('a{x="# not a comment"} + b', {"a", "b"}),
        ("# it's a comment\nc", {"c"}),
        ('{__name__="by_name_total", job="x"}', {"by_name_total"}),
        ("rate(a[5m:30s]) @ 1609746000 + 1e-3 * Inf + time()", {"a"}),
        ("x:recorded:rate5m", {"x:recorded:rate5m"}),
        ("topk(3, a) + count_values(\"v\", b) + label_replace(c, 'd', '$1', 'e', '(.*)')", {"a", "b", "c"}),
        ("vector(1) + scalar(sum(a))", {"a"}),
        ("sum by(kind)(a)", {"a"}),
    ],
)
def test_metric_names(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_a_misspelt_name_behind_a_fallback_is_still_seen() -> None:
    """What the live test is for: an `or 0 * ...` fallback would hide a misspelt metric."""
    expr = "(sum(rate(driftloop_dead_leters_total[5m])) or 0 * sum(rate(driftloop_records_in_total[5m])))"
    assert metric_names(expr) == {"driftloop_dead_leters_total", "driftloop_records_in_total"}
