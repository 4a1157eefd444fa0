"""Self-contained HTML: inline CSS, figures as base64 data URIs, no external resources."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from html import escape
from pathlib import Path

CSS = """
:root { --ink:#1f2933; --muted:#616e7c; --line:#e4e7eb; --accent:#2f6fdf; --good:#1f9d55;
        --warn:#d97706; --bad:#c53030; --bg:#f7f8fa; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
       font:15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width:1120px; margin:0 auto; padding:28px 28px 48px; }
h1 { font-size:26px; margin:0 0 4px; }
h2 { font-size:18px; margin:0 0 12px; }
.sub { color:var(--muted); margin:0 0 22px; font-size:13px; }
.sub code, td code { font-size:12px; }
section { background:#fff; border:1px solid var(--line); border-radius:10px;
          padding:18px 20px; margin:0 0 18px; }
.cards { display:grid; grid-template-columns:repeat(auto-fit, minmax(240px, 1fr)); gap:14px;
         background:none; border:0; padding:0; }
.card { background:#fff; border:1px solid var(--line); border-radius:10px; padding:14px 16px; }
.card .label { color:var(--muted); font-size:12px; text-transform:uppercase;
               letter-spacing:.04em; }
.card .value { font-size:24px; font-weight:600; margin:2px 0; }
.card .detail { color:var(--muted); font-size:13px; }
.card.best .value { color:var(--good); }
img { max-width:100%; height:auto; display:block; margin:0 auto; }
table { border-collapse:collapse; width:100%; font-size:13.5px; }
th, td { padding:6px 10px; border-bottom:1px solid var(--line); text-align:left;
         white-space:nowrap; }
th { background:#f0f2f5; font-weight:600; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
tr.best td { background:#e9f7ef; font-weight:600; }
tr.stopped td { color:var(--warn); }
tr.failed td { color:var(--bad); }
.scroll { overflow-x:auto; }
.note { color:var(--muted); font-size:13px; margin:8px 0 0; }
.pill { display:inline-block; padding:1px 8px; border-radius:999px; font-size:12px;
        background:#eef2ff; color:var(--accent); margin-right:4px; }
footer { color:var(--muted); font-size:12px; text-align:center; margin-top:24px; }
"""


def data_uri(png: Path) -> str:
    """A PNG file as a ``data:image/png;base64,...`` URI."""
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


def figure(png: Path, alt: str) -> str:
    """An ``<img>`` holding the PNG inline."""
    return f'<img src="{data_uri(png)}" alt="{escape(alt)}">'


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    numeric: Sequence[bool] | None = None,
    row_classes: Sequence[str] | None = None,
) -> str:
    """An HTML table of already-formatted cells (escaped here)."""
    numeric = numeric or [False] * len(headers)
    row_classes = row_classes or [""] * len(rows)

    def cell(tag: str, text: str, is_num: bool) -> str:
        cls = ' class="num"' if is_num else ""
        return f"<{tag}{cls}>{escape(text)}</{tag}>"

    head = "".join(cell("th", h, n) for h, n in zip(headers, numeric))
    body = "".join(
        f'<tr class="{c}">' + "".join(cell("td", v, n) for v, n in zip(r, numeric)) + "</tr>"
        for r, c in zip(rows, row_classes)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def card(label: str, value: str, detail: str = "", css_class: str = "") -> str:
    """A summary card: a small label, a big value, a muted detail line."""
    return (
        f'<div class="card {css_class}"><div class="label">{escape(label)}</div>'
        f'<div class="value">{escape(value)}</div><div class="detail">{escape(detail)}</div></div>'
    )


def section(title: str, body: str) -> str:
    """A titled white panel."""
    return f"<section><h2>{escape(title)}</h2>{body}</section>"


def page(title: str, subtitle: str, body: str, footer: str) -> str:
    """The whole document; ``subtitle`` and ``body`` are HTML, the rest plain text."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head>"
        f'<body><main><h1>{escape(title)}</h1><p class="sub">{subtitle}</p>{body}'
        f"<footer>{escape(footer)}</footer></main></body></html>\n"
    )
