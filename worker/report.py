"""A job's report: one self-contained HTML file people would rather look at than read.

Counts per digit, the confidence histogram, the cells a person should look at (review, or
"not a digit") as thumbnails beside what the model saw, with its guess and confidence,
and every error by file name. Images are inline (data: URIs) and the charts are inline
SVG: the file opens anywhere, offline, and refers to nothing outside itself.

Result lines are read once, in input order, so a job of any size is reported in flat
memory; thumbnails and the error table are capped (the counts never are).
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from digitscan.files import replacing, writable_folder
from digitscan.worker.imaging import decode, normalize
from digitscan.worker.settings import Limits

MAX_THUMBNAILS = 240
MAX_ERROR_ROWS = 5000
BINS = 20  # confidence histogram: 0.05 wide


@dataclass
class Tally:
    """What a report counts over every result line."""

    images: int = 0
    digits: list[int] = field(default_factory=lambda: [0] * 10)
    review: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # kind -> count
    confidence: list[int] = field(default_factory=lambda: [0] * BINS)
    models: set[str] = field(default_factory=set)
    jobs: set[str] = field(default_factory=set)
    attention: list[dict] = field(default_factory=list)  # review and not-a-digit lines (capped)
    needs_attention: int = 0
    error_rows: list[dict] = field(default_factory=list)  # capped

    def add(self, row: dict) -> None:
        self.images += 1
        if row.get("model"):
            self.models.add(row["model"])
        if row.get("job"):
            self.jobs.add(row["job"])
        error = row.get("error")
        if error:
            kind = error.split(":", 1)[0]
            self.errors[kind] = self.errors.get(kind, 0) + 1
            if len(self.error_rows) < MAX_ERROR_ROWS:
                self.error_rows.append(row)
        else:
            self.digits[int(row["digit"])] += 1
            self.confidence[min(int(float(row["confidence"]) * BINS), BINS - 1)] += 1
            self.review += bool(row.get("review"))
        if row.get("review") or (error or "").startswith("not a digit"):
            self.needs_attention += 1
            if len(self.attention) < MAX_THUMBNAILS:
                self.attention.append(row)


def _data_uri(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, "PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def thumbnails(data: bytes | None, limits: Limits) -> tuple[str, str] | None:
    """(the cell as scanned, the 28x28 the model saw) as data URIs; None if unreadable."""
    if data is None:
        return None
    try:
        image = decode(data, limits)
        field_ = normalize(image)
    except Exception:  # an image that failed in the worker fails here too: no picture
        return None
    shown = image.convert("RGB")
    shown.thumbnail((120, 120), Image.Resampling.LANCZOS)
    seen = Image.fromarray(255 - np.asarray(field_))  # dark ink on white, like the scan
    return _data_uri(shown), _data_uri(seen)


def _bars(values: list[int], labels: list[str], width: int, height: int, colour: str,
          title: str) -> str:
    """An inline SVG bar chart with a count over each bar."""
    top = max(values) or 1
    n = len(values)
    step = width / n
    bar = step * 0.72
    parts = [f'<svg viewBox="0 0 {width} {height + 34}" role="img" aria-label="{html.escape(title)}">']
    for i, (v, label) in enumerate(zip(values, labels)):
        h = (height - 16) * v / top
        x = i * step + (step - bar) / 2
        y = height - h
        parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                     f'rx="2" fill="{colour}"><title>{html.escape(label)}: {v:,}</title></rect>')
        if n <= 12 or v:
            parts.append(f'<text x="{x + bar / 2:.1f}" y="{y - 4:.1f}" class="count">{v:,}</text>')
        if n <= 12 or i % 4 == 0:
            parts.append(f'<text x="{x + bar / 2:.1f}" y="{height + 16}" class="axis">'
                         f'{html.escape(label)}</text>')
    if n > 12:
        parts.append(f'<text x="{width - 1:.1f}" y="{height + 16}" class="axis" '
                     'style="text-anchor:end">1.0</text>')
    parts.append("</svg>")
    return "".join(parts)


CSS = """
:root { --ink:#1d2330; --muted:#5b6475; --line:#e3e6ec; --accent:#2f6fde; --warn:#c97a00;
        --bad:#c23b3b; --ok:#2e8b57; --paper:#fbfbfd; }
* { box-sizing:border-box; }
body { margin:0; font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
       color:var(--ink); background:var(--paper); }
main { max-width:1180px; margin:0 auto; padding:28px 24px 60px; }
h1 { font-size:24px; margin:0 0 4px; }
h2 { font-size:18px; margin:34px 0 10px; }
.meta { color:var(--muted); font-size:13px; word-break:break-all; }
.tiles { display:grid; grid-template-columns:repeat(auto-fit,minmax(170px,1fr)); gap:12px;
         margin-top:20px; }
.tile { background:#fff; border:1px solid var(--line); border-radius:10px; padding:14px 16px; }
.tile b { display:block; font-size:26px; }
.tile span { color:var(--muted); font-size:13px; }
.tile.ok b { color:var(--ok); } .tile.warn b { color:var(--warn); } .tile.bad b { color:var(--bad); }
.charts { display:grid; grid-template-columns:1fr 1fr; gap:18px; }
.chart { background:#fff; border:1px solid var(--line); border-radius:10px; padding:12px 14px; }
.chart h3 { margin:0 0 6px; font-size:14px; color:var(--muted); font-weight:600; }
svg { width:100%; height:auto; }
svg .count { font-size:10px; text-anchor:middle; fill:var(--muted); }
svg .axis { font-size:11px; text-anchor:middle; fill:var(--ink); }
.cells { display:grid; grid-template-columns:repeat(auto-fill,minmax(150px,1fr)); gap:10px; }
.cell { background:#fff; border:1px solid var(--line); border-radius:10px; padding:8px;
        display:flex; flex-direction:column; gap:6px; }
.cell.review { border-top:3px solid var(--warn); } .cell.notdigit { border-top:3px solid var(--bad); }
.pics { display:flex; gap:6px; align-items:center; justify-content:center; height:96px; }
.pics img { max-height:96px; max-width:96px; border:1px solid var(--line); background:#fff; }
.pics img.scan { height:80px; width:auto; object-fit:contain; }
.pics img.seen { width:56px; height:56px; image-rendering:pixelated; }
.guess { font-size:20px; font-weight:700; } .guess small { font-size:12px; color:var(--muted);
        font-weight:400; }
.src { font-size:11px; color:var(--muted); overflow:hidden; text-overflow:ellipsis;
       white-space:nowrap; }
.missing { font-size:12px; color:var(--muted); text-align:center; }
table { width:100%; border-collapse:collapse; background:#fff; border:1px solid var(--line);
        border-radius:10px; overflow:hidden; font-size:13px; }
th, td { text-align:left; padding:6px 10px; border-bottom:1px solid var(--line); vertical-align:top; }
th { background:#f3f4f8; } td.src { white-space:normal; word-break:break-all; max-width:0;
     width:55%; font-size:13px; color:var(--ink); }
.note { color:var(--muted); font-size:13px; margin:6px 0; }
@media (max-width:760px) { .charts { grid-template-columns:1fr; } }
"""


def render(tally: Tally, read: Callable[[str], bytes | None], limits: Limits, title: str) -> str:
    e = html.escape
    not_digits = tally.errors.get("not a digit", 0)
    other_errors = sum(tally.errors.values()) - not_digits
    read_ok = tally.images - sum(tally.errors.values()) - tally.review
    models = ", ".join(sorted(tally.models)) or "-"
    created = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        '<meta name=viewport content="width=device-width,initial-scale=1">',
        f"<title>{e(title)}</title><style>{CSS}</style></head><body><main>",
        f"<h1>{e(title)}</h1>",
        f'<div class=meta>{tally.images:,} images · model {e(models)} · written {created}</div>',
        "<div class=tiles>",
        f"<div class='tile ok'><b>{read_ok:,}</b><span>digits read</span></div>",
        f"<div class='tile warn'><b>{tally.review:,}</b><span>to review (low confidence)</span></div>",
        f"<div class='tile bad'><b>{not_digits:,}</b><span>not a digit</span></div>",
        f"<div class='tile bad'><b>{other_errors:,}</b><span>other errors</span></div>",
        "</div>",
        "<h2>Digits and confidence</h2><div class=charts>",
        "<div class=chart><h3>Images per digit read</h3>",
        _bars(tally.digits, [str(d) for d in range(10)], 520, 180, "#2f6fde", "images per digit"),
        "</div><div class=chart><h3>Confidence of the digits read (calibrated probability)</h3>",
        _bars(tally.confidence, [f"{i / BINS:.1f}" for i in range(BINS)], 520, 180, "#7a5bd6",
              "confidence histogram"),
        "</div></div>",
        f"<h2>Cells for a person to look at ({tally.needs_attention:,})</h2>",
    ]
    if tally.needs_attention > len(tally.attention):
        out.append(f"<p class=note>The first {len(tally.attention):,} in input order; the "
                   "results file lists every one (review: true, or error \"not a digit\").</p>")
    if not tally.attention:
        out.append("<p class=note>None: every digit was read above the review threshold.</p>")
    out.append("<div class=cells>")
    for row in tally.attention:
        pics = thumbnails(read(row["source"]), limits)
        if row.get("error"):
            kind, guess = "notdigit", "not a digit"
            detail = e(row["error"].split(":", 1)[1].strip()) if ":" in row["error"] else ""
        else:
            kind, guess = "review", str(row["digit"])
            detail = f"confidence {float(row['confidence']):.2f}"
        images = (f'<img class=scan src="{pics[0]}" alt="scan of {e(row["source"])}">'
                  f'<img class=seen src="{pics[1]}" alt="what the model saw">' if pics else
                  "<div class=missing>image no longer readable</div>")
        out.append(f"<div class='cell {kind}'><div class=pics>{images}</div>"
                   f"<div class=guess>{e(guess)} <small>{detail}</small></div>"
                   f'<div class=src title="{e(row["source"])}">{e(row["source"])}</div></div>')
    out.append("</div>")
    out.append(f"<h2>Errors ({sum(tally.errors.values()):,})</h2>")
    if tally.errors:
        kinds = " · ".join(f"{e(k)}: {v:,}" for k, v in sorted(tally.errors.items(),
                                                                 key=lambda kv: -kv[1]))
        out.append(f"<p class=note>{kinds}</p>")
        if sum(tally.errors.values()) > len(tally.error_rows):
            out.append(f"<p class=note>The first {len(tally.error_rows):,} listed.</p>")
        out.append("<table><tr><th>file</th><th>error</th></tr>")
        out.extend(f"<tr><td class=src>{e(r['source'])}</td><td>{e(r['error'])}</td></tr>"
                   for r in tally.error_rows)
        out.append("</table>")
    else:
        out.append("<p class=note>None.</p>")
    out.append("</main></body></html>\n")
    return "".join(out)


def write_report(rows: Iterable[dict], out: str | Path, read: Callable[[str], bytes | None],
                 limits: Limits = Limits(), title: str | None = None) -> Tally:
    """Tally ``rows`` and write the report to ``out`` (all or nothing); return the tally."""
    out = Path(out)
    tally = Tally()
    for row in rows:
        tally.add(row)
    if title is None:
        title = "digitscan report" + (f": job {next(iter(tally.jobs))}" if len(tally.jobs) == 1 else "")
    page = render(tally, read, limits, title)
    with replacing(out) as part:
        part.write_text(page, encoding="utf-8")
    return tally


def check_report_path(out: str | Path) -> Path:
    """Refuse a report path before any work: it must be a writable .html file."""
    from digitscan.errors import ConfigError

    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ConfigError(f"--report/--out {out} must end in .html.")
    writable_folder(out.parent, "--report")
    return out
