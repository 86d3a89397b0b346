"""A self-contained HTML report: summary table, latency histogram, throughput over time (SVG)."""

from __future__ import annotations

import html
from collections.abc import Sequence

from agentflow.bench.stats import BenchReport, histogram

_W, _H, _PAD = 640, 240, 40


def _bars(buckets: list[tuple[float, float, int]]) -> str:
    if not buckets:
        return "<p>no successful events</p>"
    peak = max(c for _, _, c in buckets) or 1
    bw = (_W - 2 * _PAD) / len(buckets)
    parts = [f'<svg width="{_W}" height="{_H}" xmlns="http://www.w3.org/2000/svg">']
    for i, (low, high, count) in enumerate(buckets):
        h = (_H - 2 * _PAD) * count / peak
        x, y = _PAD + i * bw, _H - _PAD - h
        parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(bw - 1, 1):.1f}" height="{h:.1f}" '
            f'fill="#4878d0"><title>{low:.1f}–{high:.1f} ms: {count}</title></rect>'
        )
    lo, hi = buckets[0][0], buckets[-1][1]
    parts += [
        f'<line x1="{_PAD}" y1="{_H - _PAD}" x2="{_W - _PAD}" y2="{_H - _PAD}" stroke="#333"/>',
        f'<text x="{_PAD}" y="{_H - 15}" font-size="12">{lo:.1f} ms</text>',
        f'<text x="{_W - _PAD}" y="{_H - 15}" font-size="12" text-anchor="end">{hi:.1f} ms</text>',
        f'<text x="{_PAD}" y="{_PAD - 10}" font-size="12">max bucket: {peak} events</text>',
        "</svg>",
    ]
    return "".join(parts)


def _lines(series: Sequence[tuple[str, str, list[tuple[float, float]]]]) -> str:
    points = [p for _, _, pts in series for p in pts]
    if not points:
        return "<p>no samples</p>"
    tmax = max(t for t, _ in points) or 1.0
    vmax = max(v for _, v in points) or 1.0
    parts = [f'<svg width="{_W}" height="{_H}" xmlns="http://www.w3.org/2000/svg">']
    for i, (label, colour, pts) in enumerate(series):
        coords = " ".join(
            f"{_PAD + (_W - 2 * _PAD) * t / tmax:.1f},{_H - _PAD - (_H - 2 * _PAD) * v / vmax:.1f}"
            for t, v in pts
        )
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{coords}"/>'
        )
        parts.append(f'<text x="{_W - _PAD}" y="{_PAD - 10 + 14 * i}" font-size="12" '
                     f'text-anchor="end" fill="{colour}">{html.escape(label)}</text>')  # fmt: skip
    parts += [
        f'<line x1="{_PAD}" y1="{_H - _PAD}" x2="{_W - _PAD}" y2="{_H - _PAD}" stroke="#333"/>',
        f'<text x="{_PAD}" y="{_H - 15}" font-size="12">0 s</text>',
        f'<text x="{_W - _PAD}" y="{_H - 15}" font-size="12" text-anchor="end">{tmax:.0f} s</text>',
        f'<text x="{_PAD}" y="{_PAD - 10}" font-size="12">peak {vmax:.0f}</text>',
        "</svg>",
    ]
    return "".join(parts)


def throughput_series(report: BenchReport) -> list[tuple[float, float]]:
    """(t, completed events per second over the last sample interval)."""
    out: list[tuple[float, float]] = []
    prev_t, prev_n = 0.0, 0
    for s in report.samples:
        dt = s.t - prev_t
        if dt > 0:
            out.append((s.t, (s.completed - prev_n) / dt))
        prev_t, prev_n = s.t, s.completed
    return out


def render_html(report: BenchReport) -> str:
    """The whole report as one HTML page."""
    s = report.summary()
    lat = s["latency_ms"]
    rows = [
        ("requests/s", f"{s['requests_per_second']:.1f}"),
        ("events sent / completed", f"{s['sent']} / {s['completed']}"),
        ("errors (rate)", f"{s['errors']} ({s['error_rate']:.3%})"),
        ("latency avg / p50 / p95 / p99 / max (ms)",
         f"{lat['avg']} / {lat['p50']} / {lat['p95']} / {lat['p99']} / {lat['max']}"),
        ("worker RSS, peak (MB)", f"{s['worker_rss_mb_max']}"),
        ("events in flight, peak", f"{s['in_flight_max']}"),
        ("wall-clock seconds", f"{s['seconds']}"),
    ]  # fmt: skip
    table = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    settings = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in report.settings.items()
    )
    errors = "".join(f"<li>{html.escape(e)}</li>" for e in report.error_examples[:10])
    throughput = _lines([
        ("events/s", "#4878d0", throughput_series(report)),
        ("in flight", "#ee854a", [(x.t, float(x.in_flight)) for x in report.samples]),
    ])  # fmt: skip
    rss = _lines([("worker RSS (MB)", "#6acc64", [(x.t, x.worker_rss_mb) for x in report.samples])])
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>AgentFlow benchmark: {html.escape(report.name)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:760px}}
table{{border-collapse:collapse}}th,td{{border:1px solid #ccc;padding:4px 8px;text-align:left}}
</style></head><body>
<h1>AgentFlow benchmark: {html.escape(report.name)}</h1>
<p>agent <code>{html.escape(report.agent)}</code></p>
<table>{table}</table>
<h2>Latency histogram</h2>{_bars(histogram(report.latencies_ms))}
<h2>Throughput and events in flight over time</h2>{throughput}
<h2>Worker memory over time</h2>{rss}
<h2>Settings</h2><table>{settings}</table>
{"<h2>Errors (examples)</h2><ul>" + errors + "</ul>" if errors else ""}
</body></html>
"""
