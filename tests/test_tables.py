"""The one formatting layer every table goes through: kinds from column names, as the report shows them."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import pandas as pd
import pytest
from jobrunbook.tables import format_duration, format_value, relative_age, render_table

# calendar-sensitive (daily counters, expiries, windows, deadlines): `make test-dates` runs these under faketime
pytestmark = pytest.mark.dates

NOW = datetime(2026, 12, 2, 14, 22, 39, tzinfo=timezone.utc)


@pytest.mark.parametrize("value, kind, shown", [
    (648.0, "count", "648"), (18386, "count", "18,386"), (0.641975, "ratio", "64.2 %"), (1, "ratio", "100.0 %"),
    (0.0190, "duration", "19 ms"), (0.00042, "duration", "0.4 ms"), (2.44, "duration", "2.4 s"),
    (1800, "duration", "30 min"), (215, "duration", "3.6 min"), (True, "bool", "yes"),
    ("rate_limit", "cause", "Rate limited"), ("no_such_cause", "cause", "no such cause"),
    (None, "count", ""), (float("nan"), "ratio", ""),
    ("2026-12-02T14:18:39Z", "time", "2026-12-02 14:18:39 UTC (4 min ago)"),
])
def test_values_by_kind(value, kind, shown):
    assert format_value(value, kind, now=NOW) == shown


def test_relative_age_and_durations():
    assert relative_age(datetime(2026, 12, 2, 12, 17, 39, tzinfo=timezone.utc), NOW) == "2 h 05 min ago"
    assert relative_age(datetime(2026, 12, 2, 14, 34, 39, tzinfo=timezone.utc), NOW) == "in 12 min"
    assert format_duration(7200) == "2.0 h"


def test_a_table_has_no_index_and_says_each_columns_kind():
    df = pd.DataFrame({"queue": ["critical", "default"], "task_type": ["webhook:deliver", "email:send"],
                       "cause": ["rate_limit", "dependency"], "count": [106.0, 25.0], "ratio": [0.641975, 0.29],
                       "latency_s": [0.019, 2.5], "example_error": ["x" * 300, "lookup user: dial tcp"]},
                      index=[4, 1])
    html = render_table(df, now=NOW)
    assert "<th" in html and ">4<" not in html and ">1<" not in html  # no index column
    head = re.findall(r'<th class="k-(\w+)">([^<]*)</th>', html)
    assert head == [("id", "queue"), ("id", "task type"), ("cause", "cause"), ("count", "count"),
                    ("ratio", "ratio"), ("duration", "latency"), ("text", "example error")]
    assert '<td class="k-count">106</td>' in html and '<td class="k-ratio">64.2 %</td>' in html
    assert '<span class="cause cause-rate-limit">Rate limited</span>' in html
    assert '<td class="k-duration">19 ms</td>' in html
    # a long text is cut in the cell and kept whole in its title
    assert re.search(r'<td class="k-text" title="x{300}">x{239}\u2026</td>', html)


def test_a_meaningful_index_becomes_a_column_and_a_long_table_says_how_many_more():
    df = pd.DataFrame({"pending": range(30)}, index=pd.Index([f"q{i}" for i in range(30)], name="queue"))
    html = render_table(df, limit=10)
    assert html.count("<tr>") == 12  # the header, 10 rows and the "more" line
    assert '<td class="k-id">q0</td>' in html and "20 more row(s)" in html


def test_untrusted_cells_are_escaped():
    html = render_table([{"queue": "<script>alert(1)</script>", "example_error": "a & b"}])
    assert "<script>" not in html and "&lt;script&gt;" in html and "a &amp; b" in html
