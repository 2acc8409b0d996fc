"""Server-rendered SVG bar charts of a daily series (no script, no library; every text escaped)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from markupsafe import Markup, escape

WIDTH, HEIGHT, PAD = 720, 160, 28


def bar_chart(title: str, days: Sequence[date], values: Sequence[float]) -> Markup:
    """A bar per day scaled to the largest value, with the title, the peak and the first/last day as labels."""
    peak = max(values, default=0) or 1
    step = (WIDTH - 2 * PAD) / max(len(values), 1)
    bars = []
    for i, (day, value) in enumerate(zip(days, values, strict=True)):
        h = (HEIGHT - 2 * PAD) * value / peak
        bars.append(
            f'<rect x="{PAD + i * step:.1f}" y="{HEIGHT - PAD - h:.1f}" width="{max(step - 1, 1):.1f}" '
            f'height="{h:.1f}"><title>{escape(day.isoformat())}: {escape(f"{value:g}")}</title></rect>'
        )
    first = escape(days[0].isoformat()) if days else ""
    last = escape(days[-1].isoformat()) if days else ""
    return Markup(
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}">'
        f'<text x="{PAD}" y="16">{escape(title)} (peak {escape(f"{max(values, default=0):g}")})</text>'
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}"/>'
        f'{"".join(bars)}'
        f'<text x="{PAD}" y="{HEIGHT - 8}">{first}</text>'
        f'<text x="{WIDTH - PAD}" y="{HEIGHT - 8}" text-anchor="end">{last}</text></svg>'
    )
