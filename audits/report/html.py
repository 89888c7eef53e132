"""A self-contained ``report.html``: inline CSS, PNG figures as base64 data URIs, no script, no network."""

from __future__ import annotations

import base64
import html
from typing import Any

__all__ = ["render_html"]

MAX_ITEMS = 60   # list items / table rows shown per value (the rest: "... N more", all in report.json)
MAX_DEPTH = 4

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1d2330;color:#fff;padding:18px 32px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#c5cad3;font-size:13px}
main{padding:16px 32px;max-width:1200px}
section{overflow-x:auto;background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:14px 20px;margin:16px 0}
h2{margin:0 0 6px;font-size:18px}h3{font-size:14px;margin:14px 0 6px;color:#3b4556}
.verdict{font-size:15px;margin:6px 0 10px}
.badge{display:inline-block;padding:2px 9px;border-radius:10px;font-size:12px;font-weight:600;color:#fff;
text-transform:uppercase;vertical-align:middle}
.pass{background:#1f8a4c}.warn{background:#c98a00}.fail{background:#c0392b}.unavailable{background:#7f8896}
.info{background:#3b73b9}
table{border-collapse:collapse;font-size:13px;margin:4px 0}
td,th{border:1px solid #dde1e7;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#eef1f5}
table.kv>tbody>tr>th{width:1%;white-space:nowrap}
ul{margin:4px 0;padding-left:22px;font-size:13px}
pre{background:#f1f3f6;padding:8px;overflow-x:auto;font-size:12px;max-height:320px}
code,.mono{font-family:SFMono-Regular,Menlo,Consolas,monospace;font-size:12px}
img{max-width:100%;border:1px solid #dde1e7;margin:6px 0}
.muted{color:#6b7280}
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _scalar(x: Any) -> str:
    if isinstance(x, float):
        return _e(f"{x:.6g}")
    if x is None:
        return '<span class="muted">–</span>'
    s = str(x)
    if len(s) > 48 and " " not in s:  # hashes, paths
        return f'<span class="mono">{_e(s)}</span>'
    return _e(s)


def _value(x: Any, depth: int = 0) -> str:
    """Compact HTML of JSON-like data: dict -> key/value table, list of dicts -> table, list -> inline."""
    if depth > MAX_DEPTH:
        return _e(repr(x)[:200])
    if isinstance(x, dict):
        if not x:
            return '<span class="muted">{}</span>'
        items = list(x.items())
        # a dict of scalars keyed by ids (e.g. per-client ε): one row
        if len(items) > 3 and all(not isinstance(v, (dict, list)) and len(str(v)) <= 24 for _, v in items):
            head = "".join(f"<th>{_e(k)}</th>" for k, _ in items[:MAX_ITEMS])
            row = "".join(f"<td>{_scalar(v)}</td>" for _, v in items[:MAX_ITEMS])
            more = f'<p class="muted">... {len(items) - MAX_ITEMS} more</p>' if len(items) > MAX_ITEMS else ""
            return f"<table><tr>{head}</tr><tr>{row}</tr></table>{more}"
        rows = "".join(f"<tr><th>{_e(k)}</th><td>{_value(v, depth + 1)}</td></tr>" for k, v in items[:MAX_ITEMS])
        more = f"<tr><td colspan=2 class=muted>... {len(items) - MAX_ITEMS} more</td></tr>" \
            if len(items) > MAX_ITEMS else ""
        return f'<table class="kv"><tbody>{rows}{more}</tbody></table>'
    if isinstance(x, (list, tuple)):
        if not x:
            return '<span class="muted">[]</span>'
        if all(isinstance(v, dict) for v in x):
            cols: list[str] = []
            for v in x[:MAX_ITEMS]:
                cols += [k for k in v if k not in cols]
            head = "".join(f"<th>{_e(c)}</th>" for c in cols)
            body = "".join("<tr>" + "".join(f"<td>{_value(v.get(c), depth + 1)}</td>" for c in cols) + "</tr>"
                           for v in x[:MAX_ITEMS])
            more = f'<p class="muted">... {len(x) - MAX_ITEMS} more rows</p>' if len(x) > MAX_ITEMS else ""
            return f"<table><tr>{head}</tr>{body}</table>{more}"
        shown = ", ".join(_value(v, depth + 1) for v in x[:MAX_ITEMS])
        return shown + (f' <span class="muted">... {len(x) - MAX_ITEMS} more</span>' if len(x) > MAX_ITEMS else "")
    if isinstance(x, str) and "\n" in x:
        return f"<pre>{_e(x)}</pre>"
    return _scalar(x)


def _badge(status: str) -> str:
    return f'<span class="badge {_e(status)}">{_e(status)}</span>'


def _section(s: Any) -> str:
    from trustfl.audits.report.runner import jsonable

    out = [f'<section id="{_e(s.name)}">', f"<h2>{_e(s.name.capitalize())} {_badge(s.status)}</h2>",
           f'<p class="verdict">{_e(s.verdict)}</p>', f'<p class="muted">{s.seconds:.2f} s</p>']
    if s.checked:
        out.append("<h3>Checked</h3><ul>" + "".join(f"<li>{_e(c)}</li>" for c in s.checked) + "</ul>")
    if s.findings:
        rows = "".join(
            f"<tr><td>{_badge(f.severity)}</td><td>{_e(f.title)}</td><td>{_value(jsonable(f.details), 1) if f.details else ''}"
            "</td></tr>" for f in s.findings)
        out.append(f"<h3>Findings</h3><table><tr><th>severity</th><th>finding</th><th>details</th></tr>{rows}</table>")
    if s.not_checked:
        out.append("<h3>Not checked</h3><ul>" + "".join(
            f"<li><b>{_e(n.what)}</b>: {_e(n.why)}</li>" for n in s.not_checked) + "</ul>")
    for name, png in s.figures.items():
        b64 = base64.b64encode(png).decode("ascii")
        out.append(f'<h3>{_e(name)}</h3><img alt="{_e(name)}" src="data:image/png;base64,{b64}">')
    if s.data:
        out.append("<h3>Data</h3>" + _value(jsonable(s.data)))
    out.append("</section>")
    return "\n".join(out)


def render_html(report: Any) -> str:
    """The HTML text of an :class:`~trustfl.audits.report.runner.AuditReport`."""
    rows = "".join(
        f'<tr><td><a href="#{_e(s.name)}">{_e(s.name)}</a></td><td>{_badge(s.status)}</td><td>{_e(s.verdict)}</td></tr>'
        for s in report.sections)
    summary = f'<section id="summary"><h2>Summary</h2><table><tr><th>section</th><th>status</th><th>verdict</th></tr>{rows}</table></section>'
    body = "\n".join(_section(s) for s in report.sections)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>trustfl audit: {_e(report.run_dir)}</title>"
        f"<style>{CSS}</style></head><body>"
        f"<header><h1>trustfl audit</h1><p>run {_e(report.run_dir)} · {_e(report.created)} · "
        f"trustfl {_e(report.versions.get('trustfl', '?'))} · {report.seconds:.1f} s</p></header>"
        f"<main>{summary}\n{body}</main></body></html>\n")
