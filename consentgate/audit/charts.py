"""Small inline SVG charts (no scripts, no external files), so the audit pack renders offline."""

from __future__ import annotations

from html import escape

COLOURS = {"pass": "#2e7d32", "no_consent_record": "#9e9e9e", "erased": "#6a1b9a", "no_grant": "#bdbdbd",
           "grant_after_event": "#f9a825", "expired": "#ef6c00", "stale_terms": "#8d6e63",
           "unknown_category": "#546e7a", "revoke": "#1565c0", "erase": "#c62828"}


def colour(name: str) -> str:
    return COLOURS.get(name, "#78909c")


def stacked_bars(rows: list[tuple[str, dict[str, int]]], order: list[str], width: int = 760) -> str:
    """One horizontal bar per row, split by ``order`` (a legend below); bar length is the row's share."""
    label_w, bar_h, gap = 250, 22, 10
    total_max = max((sum(parts.values()) for _, parts in rows), default=0) or 1
    span = width - label_w - 70
    height = len(rows) * (bar_h + gap) + 64
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
           f'font-family="sans-serif" font-size="12">']
    for i, (label, parts) in enumerate(rows):
        y = i * (bar_h + gap) + 4
        out.append(f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end">{escape(label)}</text>')
        x = float(label_w)
        for key in order:
            n = parts.get(key, 0)
            if not n:
                continue
            w = span * n / total_max
            out.append(f'<rect x="{x:.1f}" y="{y}" width="{max(w, 0.5):.1f}" height="{bar_h}" fill="{colour(key)}">'
                       f'<title>{escape(label)}: {escape(key)} {n:,}</title></rect>')
            x += w
        out.append(f'<text x="{x + 6:.1f}" y="{y + 15}">{sum(parts.values()):,}</text>')
    out.append(_legend(order, len(rows) * (bar_h + gap) + 14, width))
    out.append("</svg>")
    return "".join(out)


def _legend(keys: list[str], y: int, width: int) -> str:
    """Swatches left to right, wrapping onto a new line 18 px lower when the width is used up."""
    out, x = [], 10
    for key in keys:
        step = 18 + 7 * len(key) + 14
        if x + step > width:
            x, y = 10, y + 18
        out.append(f'<rect x="{x}" y="{y}" width="12" height="12" fill="{colour(key)}"/>'
                   f'<text x="{x + 16}" y="{y + 11}">{escape(key)}</text>')
        x += step
    return "".join(out)


def time_bars(buckets: list[tuple[str, dict[str, int]]], order: list[str], width: int = 760) -> str:
    """Vertical stacked bars over time (e.g. revocations and erasures per interval)."""
    height, top, bottom, left = 220, 10, 40, 40
    peak = max((sum(parts.values()) for _, parts in buckets), default=0) or 1
    n = max(len(buckets), 1)
    slot = (width - left - 10) / n
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 24}" role="img" '
           f'font-family="sans-serif" font-size="11">',
           f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}" stroke="#555"/>',
           f'<text x="{left - 4}" y="{top + 8}" text-anchor="end">{peak:,}</text>',
           f'<text x="{left - 4}" y="{height - bottom}" text-anchor="end">0</text>']
    plot = height - top - bottom
    for i, (label, parts) in enumerate(buckets):
        x = left + i * slot + 1
        y = float(height - bottom)
        for key in order:
            value = parts.get(key, 0)
            if not value:
                continue
            h = plot * value / peak
            y -= h
            out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(slot - 2, 1):.1f}" height="{h:.1f}" '
                       f'fill="{colour(key)}"><title>{escape(label)}: {escape(key)} {value:,}</title></rect>')
        if i == 0 or i == len(buckets) - 1:
            out.append(f'<text x="{x:.1f}" y="{height - bottom + 14}">{escape(label)}</text>')
    out.append(_legend(order, height + 6, width))
    out.append("</svg>")
    return "".join(out)
