"""Runbook step 3: the worker's own ``/metrics``.

    curl -s http://localhost:8080/metrics | grep 'job_processed_total{.*status="failed"}'
    curl -s http://localhost:8080/metrics | grep job_duration

One scrape gives lifetime failure ratios (overall, per queue, per task type)
and job-duration quantiles with the share of jobs at or beyond the task
timeout; two scrapes some seconds apart give the current rates. When the app's
``job_processed_total`` is absent, asynq's own exporter metrics
(``asynq_tasks_processed_total``, ``asynq_tasks_failed_total``,
``asynq_queue_size``) give the ratio per queue. Exposition text is parsed with
prometheus_client's parsers (text format 0.0.4 and OpenMetrics).
"""

from __future__ import annotations

import math
import time

import pandas as pd
import requests
from prometheus_client.openmetrics.parser import text_string_to_metric_families as _parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as _parse_text

from jobrunbook._exceptions import DataError
from jobrunbook._urls import redact_url
from jobrunbook.sources.names import MetricNames
from jobrunbook.sources.result import SourceResult, Stopwatch, result_from_request_error

__all__ = [
    "MetricNames",
    "scrape_metrics",
    "parse_metrics",
    "failure_ratios",
    "duration_quantiles",
    "histogram_quantile",
    "counter_increases",
    "collect_worker_metrics",
    "measure_rates",
]

SOURCE = "worker_metrics"
MAX_BYTES = 20 * 1024 * 1024
_ACCEPT = "text/plain;version=0.0.4;q=0.9,application/openmetrics-text;version=1.0.0;q=0.5,*/*;q=0.1"
_RATIO_COLUMNS = ["processed", "failed", "ratio"]


def _hint(url: str) -> str:
    return f"curl -s {redact_url(url)} | grep -E 'job_processed_total|job_duration|asynq_'"


def parse_metrics(text: str, *, openmetrics: bool | None = None) -> pd.DataFrame:
    """Exposition text -> one row per sample: family, type, sample, labels (dict), value.

    OpenMetrics is chosen when asked, or when the text ends with ``# EOF``.
    Malformed text raises DataError naming the parser's complaint.
    """
    if openmetrics is None:
        openmetrics = text.rstrip().endswith("# EOF")
    parser = _parse_openmetrics if openmetrics else _parse_text
    rows = []
    try:
        for family in parser(text):
            for s in family.samples:
                rows.append((family.name, family.type, s.name, dict(s.labels), float(s.value)))
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        kind = "OpenMetrics" if openmetrics else "Prometheus text"
        raise DataError(f"malformed {kind} exposition: {str(exc)[:200]}") from exc
    return pd.DataFrame(rows, columns=["family", "type", "sample", "labels", "value"])


def scrape_metrics(url: str, *, timeout: float = 5.0, session: requests.Session | None = None,
                   max_bytes: int = MAX_BYTES, clock=time.monotonic) -> SourceResult:
    """GET ``url`` and parse it; data is the samples DataFrame of ``parse_metrics``."""
    http = session or requests
    watch = Stopwatch(clock)
    safe = redact_url(url)
    try:
        with http.get(url, timeout=timeout, stream=True, headers={"Accept": _ACCEPT}) as resp:
            body = bytearray()
            for chunk in resp.iter_content(65536):
                body += chunk
                if len(body) > max_bytes:
                    return SourceResult(SOURCE, "error", f"/metrics at {safe} is larger than {max_bytes} bytes",
                                        hint=_hint(url), elapsed_s=watch.elapsed, target=safe)
                if watch.elapsed > timeout * 2:
                    return SourceResult(SOURCE, "timeout", f"worker metrics did not finish in {timeout * 2:g} s "
                                        f"at {safe}", hint=_hint(url), elapsed_s=watch.elapsed, target=safe)
            if resp.status_code != 200:
                return SourceResult(SOURCE, "down" if resp.status_code >= 500 else "error",
                                    f"worker metrics answered HTTP {resp.status_code} at {safe}",
                                    hint=_hint(url), elapsed_s=watch.elapsed, target=safe,
                                    details={"http_status": resp.status_code})
            content_type = resp.headers.get("Content-Type", "")
    except requests.RequestException as exc:
        return result_from_request_error(SOURCE, "worker metrics", url, exc, timeout=timeout,
                                         elapsed_s=watch.elapsed, hint=_hint(url))
    text = body.decode("utf-8", errors="replace")
    try:
        samples = parse_metrics(text, openmetrics=True if "openmetrics" in content_type else None)
    except DataError as exc:
        return SourceResult(SOURCE, "error", f"{exc.message} at {safe}", hint=_hint(url),
                            elapsed_s=watch.elapsed, target=safe)
    return SourceResult(SOURCE, "ok", f"scraped {len(samples)} samples from {safe}", hint=_hint(url),
                        elapsed_s=watch.elapsed, data=samples, target=safe)


def _rows(samples: pd.DataFrame, name: str):
    if samples is None or samples.empty:
        return []
    sel = samples[samples["sample"] == name]
    return list(zip(sel["labels"], sel["value"], strict=True))


def _ratio_frame(totals: dict, key_names: list[str]) -> pd.DataFrame:
    rows = []
    for key, (processed, failed) in sorted(totals.items()):
        ratio = failed / processed if processed > 0 else math.nan
        rows.append((*key, processed, failed, ratio))
    return pd.DataFrame(rows, columns=[*key_names, *_RATIO_COLUMNS])


def failure_ratios(samples: pd.DataFrame, names: MetricNames = MetricNames()) -> dict:
    """Failed / processed, overall and per queue, task type and (queue, task type).

    Returns {"metric", "overall": {processed, failed, ratio}, "by_queue",
    "by_task_type", "by_queue_task_type" (DataFrames with columns
    [keys..., processed, failed, ratio]), "queue_size" (asynq only)}.
    Raises DataError when neither the app's metric nor asynq's is present.
    """
    by_qt: dict = {}
    metric = names.processed
    rows = _rows(samples, names.processed)
    if rows:
        for labels, value in rows:
            key = (labels.get(names.queue_label, ""), labels.get(names.type_label, ""))
            processed, failed = by_qt.get(key, (0.0, 0.0))
            is_failed = labels.get(names.status_label) in names.failed_values
            by_qt[key] = (processed + value, failed + (value if is_failed else 0.0))
    else:
        processed_rows = _rows(samples, names.asynq_processed)
        if not processed_rows:
            raise DataError(f"neither {names.processed} nor {names.asynq_processed} is exported")
        metric = names.asynq_processed
        for labels, value in processed_rows:
            key = (labels.get("queue", ""), "")
            p, f = by_qt.get(key, (0.0, 0.0))
            by_qt[key] = (p + value, f)
        for labels, value in _rows(samples, names.asynq_failed):
            key = (labels.get("queue", ""), "")
            p, f = by_qt.get(key, (0.0, 0.0))
            by_qt[key] = (p, f + value)

    def roll(index: int | None) -> dict:
        out: dict = {}
        for key, (p, f) in by_qt.items():
            k = () if index is None else (key[index],)
            op, of = out.get(k, (0.0, 0.0))
            out[k] = (op + p, of + f)
        return out

    overall = roll(None).get((), (0.0, 0.0))
    queue_size = pd.DataFrame(
        [(labels.get("queue", ""), value) for labels, value in _rows(samples, names.asynq_queue_size)],
        columns=["queue", "size"])
    has_types = metric == names.processed
    return {
        "metric": metric,
        "overall": {"processed": overall[0], "failed": overall[1],
                    "ratio": overall[1] / overall[0] if overall[0] > 0 else math.nan},
        "by_queue": _ratio_frame(roll(0), ["queue"]),
        "by_task_type": _ratio_frame(roll(1), ["task_type"]) if has_types
        else pd.DataFrame(columns=["task_type", *_RATIO_COLUMNS]),
        "by_queue_task_type": _ratio_frame(by_qt, ["queue", "task_type"]) if has_types
        else pd.DataFrame(columns=["queue", "task_type", *_RATIO_COLUMNS]),
        "queue_size": queue_size,
    }


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """The q-quantile from cumulative (upper bound, count) buckets, as Prometheus computes it.

    Linear interpolation inside the bucket holding the rank; the first bucket
    starts at 0 (when its bound is positive); a rank in the +Inf bucket gives
    the highest finite bound; no +Inf bucket or no observations gives NaN.
    """
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    buckets = sorted(buckets)
    if len(buckets) < 2 or not math.isinf(buckets[-1][0]):
        return math.nan
    # Prometheus repairs non-monotonic counts (scrape races) before using them
    fixed, high = [], 0.0
    for bound, count in buckets:
        high = max(high, count)
        fixed.append((bound, high))
    total = fixed[-1][1]
    if total == 0:
        return math.nan
    rank = q * total
    b = next(i for i, (_, count) in enumerate(fixed) if count >= rank)
    if b == len(fixed) - 1:
        return fixed[-2][0]
    if b == 0 and fixed[0][0] <= 0:
        return fixed[0][0]
    start, below = (0.0, 0.0) if b == 0 else fixed[b - 1]
    end, count = fixed[b]
    in_bucket = count - below
    return start + (end - start) * ((rank - below) / in_bucket) if in_bucket > 0 else end


def _count_at_or_below(value: float, buckets: list[tuple[float, float]]) -> float:
    """Observations <= value, interpolating linearly inside a bucket."""
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in buckets:
        if value <= bound:
            if math.isinf(bound):
                return prev_count  # beyond the last finite bound: a lower estimate of what exceeds it
            width = bound - prev_bound
            share = (value - prev_bound) / width if width > 0 else 1.0
            return prev_count + (count - prev_count) * max(0.0, min(1.0, share))
        prev_bound, prev_count = bound, count
    return prev_count


def duration_quantiles(samples: pd.DataFrame, names: MetricNames = MetricNames(), *,
                       quantiles: tuple[float, ...] = (0.5, 0.95, 0.99), task_timeout_s: float | None = None,
                       by: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Quantiles of the duration histogram per task type (summed over other labels).

    Columns: the ``by`` labels (default the task-type label), count, mean_s,
    p50_s, p95_s, p99_s (one per quantile), timeout_s and share_at_or_beyond_timeout
    (NaN without a timeout). An absent histogram gives an empty frame.
    """
    by = by or (names.type_label,)
    qcols = [f"p{round(q * 100):d}_s" for q in quantiles]
    columns = [*by, "count", "mean_s", *qcols, "timeout_s", "share_at_or_beyond_timeout"]
    groups: dict = {}
    sums: dict = {}
    for labels, value in _rows(samples, names.duration + "_bucket"):
        key = tuple(labels.get(k, "") for k in by)
        le = float(labels.get("le", "nan"))
        per = groups.setdefault(key, {})
        per[le] = per.get(le, 0.0) + value
    for labels, value in _rows(samples, names.duration + "_sum"):
        key = tuple(labels.get(k, "") for k in by)
        sums[key] = sums.get(key, 0.0) + value
    rows = []
    for key in sorted(groups):
        buckets = sorted(groups[key].items())
        total = buckets[-1][1] if buckets and math.isinf(buckets[-1][0]) else math.nan
        mean = sums.get(key, math.nan) / total if total and total > 0 else math.nan
        qs = [histogram_quantile(q, buckets) for q in quantiles]
        if task_timeout_s is not None and total and total > 0:
            share = (total - _count_at_or_below(task_timeout_s, buckets)) / total
        else:
            share = math.nan
        rows.append((*key, total, mean, *qs, task_timeout_s if task_timeout_s is not None else math.nan, share))
    return pd.DataFrame(rows, columns=columns)


def counter_increases(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """Per-series increase of counters (and histogram/summary counts) between two scrapes.

    A value lower than before is a counter reset: the increase is the new
    value, as Prometheus's ``increase`` reads it. Series new in ``after``
    count from 0. Gauges are dropped. Same columns as ``parse_metrics``.
    """
    def counting(df: pd.DataFrame) -> dict:
        out = {}
        for family, kind, name, labels, value in df.itertuples(index=False):
            counting_kind = kind in ("counter", "histogram", "summary") or (
                kind in ("untyped", "unknown") and name.endswith(("_total", "_count", "_sum", "_bucket")))
            if counting_kind and not (kind == "summary" and "quantile" in labels):
                out[(name, tuple(sorted(labels.items())))] = (family, kind, labels, value)
        return out

    old, new = counting(before), counting(after)
    rows = []
    for key, (family, kind, labels, value) in new.items():
        prev = old.get(key)
        increase = value if prev is None or value < prev[3] else value - prev[3]
        rows.append((family, kind, key[0], labels, increase))
    return pd.DataFrame(rows, columns=["family", "type", "sample", "labels", "value"])


def collect_worker_metrics(url: str, *, names: MetricNames = MetricNames(), task_timeout_s: float | None = None,
                           timeout: float = 5.0, session: requests.Session | None = None) -> SourceResult:
    """One scrape -> data {"failure": failure_ratios(...), "durations": duration_quantiles(...)}."""
    result = scrape_metrics(url, timeout=timeout, session=session)
    if not result.reachable:
        return result
    samples = result.data
    try:
        failure = failure_ratios(samples, names)
    except DataError as exc:
        result.status, result.message = "error", f"{exc.message} at {result.target}"
        result.data = {"failure": None, "durations": duration_quantiles(samples, names), "samples": samples}
        return result
    durations = duration_quantiles(samples, names, task_timeout_s=task_timeout_s)
    overall = failure["overall"]
    result.message = (f"{overall['failed']:g} of {overall['processed']:g} processed failed "
                      f"({_pct(overall['ratio'])}, lifetime, {failure['metric']}) at {result.target}")
    result.data = {"failure": failure, "durations": durations, "samples": samples}
    return result


def measure_rates(url: str, *, interval_s: float = 10.0, names: MetricNames = MetricNames(),
                  timeout: float = 5.0, session: requests.Session | None = None, sleep=time.sleep,
                  clock=time.monotonic) -> SourceResult:
    """Two scrapes ``interval_s`` apart -> current rates.

    data: {"interval_s", "failure": failure_ratios over the increases (same
    shape as lifetime), "rates": DataFrame [queue, task_type, processed_per_s,
    failed_per_s, ratio]}. No traffic in the interval gives ratio NaN.
    """
    first = scrape_metrics(url, timeout=timeout, session=session, clock=clock)
    if not first.reachable:
        return first
    t0 = clock()
    sleep(interval_s)
    second = scrape_metrics(url, timeout=timeout, session=session, clock=clock)
    if not second.reachable:
        return second
    seconds = max(clock() - t0, 1e-9)
    increases = counter_increases(first.data, second.data)
    try:
        failure = failure_ratios(increases, names)
    except DataError as exc:
        return SourceResult(SOURCE, "error", f"{exc.message} at {second.target}", hint=second.hint,
                            elapsed_s=first.elapsed_s + seconds, target=second.target)
    table = failure["by_queue_task_type"] if not failure["by_queue_task_type"].empty else failure["by_queue"]
    rates = table.copy()
    if "task_type" not in rates:
        rates.insert(1, "task_type", "")
    rates["processed_per_s"] = rates["processed"] / seconds
    rates["failed_per_s"] = rates["failed"] / seconds
    rates = rates[["queue", "task_type", "processed_per_s", "failed_per_s", "ratio"]]
    overall = failure["overall"]
    message = (f"{overall['processed'] / seconds:.2f} jobs/s processed, {overall['failed'] / seconds:.2f}/s failed "
               f"({_pct(overall['ratio'])}) over the last {seconds:.1f} s at {second.target}")
    return SourceResult(SOURCE, "ok", message, hint=second.hint, elapsed_s=seconds + first.elapsed_s,
                        target=second.target, data={"interval_s": seconds, "failure": failure, "rates": rates})


def _pct(ratio: float) -> str:
    return "no traffic" if ratio is None or math.isnan(ratio) else f"{ratio:.1%}"
