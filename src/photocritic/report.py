"""``photocritic report``: one self-contained HTML page from a results file.

Reads what ``score`` (or ``explain``) wrote - CSV, JSONL or Parquet - and
writes a page with no outside references: a contact sheet of thumbnails
(inline JPEG data) sorted by score, a histogram of the scores (inline SVG),
the per-attribute columns where the results have them, and the files that
failed with their reasons. Thumbnails are made from the files named in the
``path`` column; a file that cannot be read now still gets its card, marked
"no preview", with its numbers.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from .errors import DataError, UsageError

#: columns that are not per-attribute scores
BASE_COLUMNS = ("path", "score", "status", "error", "cached", "binary", "context_class", "distribution",
                "critique")


def thumbnail_uri(path: str, size: int = 240) -> str:
    """A ``data:`` URI of a JPEG thumbnail of ``path`` (longest side
    ``size``), or "" when the file cannot be read as an image."""
    try:
        with Image.open(path) as im:
            im.draft("RGB", (size, size))
            im = im.convert("RGB")
            im.thumbnail((size, size))
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=80)
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
    except Exception:  # noqa: BLE001 - a card whose thumbnail fails still shows its numbers
        return ""


def _number(v):
    if v is None or v == "":
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def read_results(path: str | Path) -> list[dict]:
    """The rows of a results file (CSV, JSONL or Parquet, by extension) as
    dicts; ``score`` becomes a float or None, ``distribution`` (or CSV's
    ``p1..p10``) a list. A file without a ``path`` column is a DataError."""
    path = Path(path)
    ext = path.suffix.lower()
    if not path.is_file():
        raise UsageError(f"{path}: no such results file")
    try:
        if ext == ".csv":
            with open(path, newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
        elif ext in (".jsonl", ".ndjson"):
            rows = []
            with open(path, encoding="utf-8") as fh:
                for n, line in enumerate(fh, 1):
                    if line.strip():
                        try:
                            rows.append(json.loads(line))
                        except json.JSONDecodeError as exc:
                            raise DataError(f"{path}: line {n} is not JSON ({exc.msg})") from None
        elif ext == ".parquet":
            import pyarrow.parquet as pq

            rows = pq.read_table(path).to_pylist()
        else:
            raise UsageError(f"{path}: unknown results format {ext!r}; give a .csv, .jsonl or .parquet file")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text results file (not UTF-8)") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - pyarrow's errors for a damaged file
        if isinstance(exc, (DataError, UsageError)):
            raise
        raise DataError(f"{path}: not a readable {ext[1:]} file ({type(exc).__name__}: {exc})") from None
    if rows and any(not isinstance(r, dict) or "path" not in r for r in rows):
        raise DataError(f"{path}: every row needs a 'path' (is this a photocritic results file?)")
    for r in rows:
        r["score"] = _number(r.get("score"))
        if "p1" in r and "distribution" not in r:
            dist = [_number(r.pop(f"p{k}", None)) for k in range(1, 11)]
            r["distribution"] = None if any(v is None for v in dist) else dist
        r["status"] = r.get("status") or ("ok" if r["score"] is not None else "unknown")
        r["error"] = r.get("error") or ""
    return rows


def attribute_columns(rows: list[dict]) -> list[str]:
    """Numeric per-attribute score columns (not descriptions, not the base columns)."""
    names: list[str] = []
    for r in rows:
        for k, v in r.items():
            if k in BASE_COLUMNS or k in names or k.endswith("_description") or (k[:1] == "p" and k[1:].isdigit()):
                continue
            if _number(v) is not None:
                names.append(k)
    return names


def histogram_svg(scores: list[float], bins: int = 18, low: float = 1.0, high: float = 10.0,
                  width: int = 540, height: int = 180) -> str:
    """An inline SVG histogram of ``scores`` on [low, high] (``bins`` bars, counts on top)."""
    counts = [0] * bins
    for s in scores:
        k = int((min(max(s, low), high) - low) / (high - low) * bins)
        counts[min(k, bins - 1)] += 1
    top = max(counts) or 1
    pad, bw = 24, (width - 2 * 24) / bins
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 40}" '
             f'role="img" aria-label="histogram of scores">']
    for k, c in enumerate(counts):
        h = height * c / top
        x = pad + k * bw
        parts.append(f'<rect x="{x:.1f}" y="{height - h + 16:.1f}" width="{bw - 2:.1f}" height="{h:.1f}" '
                     f'fill="#3465a4"><title>{low + k * (high - low) / bins:.1f}-'
                     f'{low + (k + 1) * (high - low) / bins:.1f}: {c}</title></rect>')
        if c:
            parts.append(f'<text x="{x + bw / 2:.1f}" y="{height - h + 12:.1f}" font-size="10" '
                         f'text-anchor="middle">{c}</text>')
    for v in range(int(low), int(high) + 1):
        x = pad + (v - low) / (high - low) * (width - 2 * pad)
        parts.append(f'<text x="{x:.1f}" y="{height + 34}" font-size="11" text-anchor="middle">{v}</text>')
    parts.append(f'<line x1="{pad}" y1="{height + 16}" x2="{width - pad}" y2="{height + 16}" stroke="#555"/>')
    parts.append("</svg>")
    return "".join(parts)


def _bars(values: dict, names: list[str]) -> str:
    out = []
    finite = {a: values[a] for a in names if values.get(a) is not None}
    low = min(finite, key=finite.get) if finite else None
    for a in names:
        v = values.get(a)
        if v is None:
            continue
        pct = max(0.0, min(100.0, (v - 1) / 9 * 100))
        out.append(f'<div class="attr"><span class="aname">{html.escape(a.replace("_", " "))}</span>'
                   f'<span class="bar{" low" if a == low else ""}" style="width:{pct * 0.6:.0f}%"></span>'
                   f'<span class="val">{v:.1f}</span></div>')
    return "".join(out)


def render(rows: list[dict], title: str = "photocritic report", thumb: int = 200, max_thumbnails: int = 1000,
           workers: int = 4) -> str:
    """The page's HTML (see the module docstring)."""
    ok = sorted((r for r in rows if r["status"] == "ok" and r["score"] is not None), key=lambda r: -r["score"])
    bad = [r for r in rows if not (r["status"] == "ok" and r["score"] is not None)]
    names = attribute_columns(ok)
    shown = ok[:max_thumbnails]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        uris = list(pool.map(lambda r: thumbnail_uri(str(r["path"]), thumb), shown))
    cards = []
    for rank, (r, uri) in enumerate(zip(shown, uris), 1):
        img = (f'<img src="{uri}" alt="{html.escape(str(r["path"]))}">' if uri
               else '<div class="noimg">no preview</div>')
        attrs = {a: _number(r.get(a)) for a in names}
        cards.append(f'<figure class="card" data-score="{r["score"]:.4f}">{img}<figcaption>'
                     f'<span class="rank">#{rank}</span> <span class="score">{r["score"]:.2f}</span>'
                     f'<div class="path" title="{html.escape(str(r["path"]))}">{html.escape(Path(str(r["path"])).name)}'
                     f'</div>{_bars(attrs, names)}</figcaption></figure>')
    rest = ""
    if len(ok) > len(shown):
        rest = (f"<h2>Further {len(ok) - len(shown)} scored files (no thumbnails)</h2><table><tr><th>rank</th>"
                "<th>score</th><th>path</th></tr>" + "".join(
                    f"<tr><td>{k}</td><td>{r['score']:.2f}</td><td>{html.escape(str(r['path']))}</td></tr>"
                    for k, r in enumerate(ok[len(shown):], len(shown) + 1)) + "</table>")
    failed = "" if not bad else (
        f'<h2 id="failed">Failed files ({len(bad)})</h2><table class="failed"><tr><th>path</th><th>status</th>'
        "<th>reason</th></tr>" + "".join(
            f"<tr><td>{html.escape(str(r['path']))}</td><td>{html.escape(str(r['status']))}</td>"
            f"<td>{html.escape(str(r['error']))}</td></tr>" for r in bad) + "</table>")
    scores = [r["score"] for r in ok]
    if scores:
        srt = sorted(scores)
        median = srt[len(srt) // 2] if len(srt) % 2 else (srt[len(srt) // 2 - 1] + srt[len(srt) // 2]) / 2
        stats = (f"{len(rows)} files: {len(ok)} scored, {len(bad)} failed. Scores: mean {sum(scores) / len(scores):.2f}, "
                 f"median {median:.2f}, from {srt[0]:.2f} to {srt[-1]:.2f}.")
        hist = histogram_svg(scores)
    else:
        stats, hist = f"{len(rows)} files, none scored.", ""
    attr_note = (f"<p>Per-attribute scores (1-10, the lowest in red): {html.escape(', '.join(names))}.</p>"
                 if names else "")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
.sheet {{ display: grid; grid-template-columns: repeat(auto-fill, minmax({thumb + 16}px, 1fr)); gap: 12px; }}
.card {{ margin: 0; border: 1px solid #ddd; border-radius: 6px; padding: 8px; background: #fafafa; }}
.card img {{ max-width: {thumb}px; max-height: {thumb}px; display: block; margin: 0 auto; }}
.noimg {{ height: {thumb // 2}px; display: flex; align-items: center; justify-content: center; color: #888; }}
.rank {{ color: #777; }} .score {{ font-weight: 600; font-size: 1.15em; }}
.path {{ font-family: monospace; font-size: .8em; color: #555; overflow: hidden; text-overflow: ellipsis;
        white-space: nowrap; line-height: 1.4; }}
.attr {{ font-size: .75em; }} .aname {{ display: inline-block; width: 7.5em; }}
.bar {{ display: inline-block; height: .7em; background: #3465a4; vertical-align: middle; }}
.bar.low {{ background: #cc0000; }} .val {{ margin-left: .3em; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ddd; padding: 2px 6px; text-align: left; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{stats}</p>
{hist}
{attr_note}
<h2>Contact sheet, best first</h2>
<div class="sheet">{"".join(cards)}</div>
{rest}
{failed}
</body></html>
"""


def write_report(results: str | Path, output: str | Path, title: str | None = None, thumb: int = 200,
                 max_thumbnails: int = 1000) -> dict:
    """Read ``results`` and write the page to ``output``; returns counts."""
    rows = read_results(results)
    page = render(rows, title=title or f"photocritic report: {Path(results).name}", thumb=thumb,
                  max_thumbnails=max_thumbnails)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".part")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(output)
    ok = sum(r["status"] == "ok" and r["score"] is not None for r in rows)
    return {"rows": len(rows), "scored": ok, "failed": len(rows) - ok, "attributes": attribute_columns(rows),
            "bytes": output.stat().st_size}
