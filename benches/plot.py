#!/usr/bin/env python3
"""Draws the scaling curve of `cargo bench --bench push -- --only scaling` as an SVG.

Usage: python3 benches/plot.py [CSV] [SVG]

CSV defaults to push-scaling.csv in $CARGO_TARGET_DIR (or target/), as the bench writes it;
SVG defaults to benches/scaling.svg. Python 3 standard library only: the SVG is written by hand.

The CSV has one row per peer, number of parked polls (n) and run; the plot shows the median over
runs of fan-out p50 and p99 (publish to last byte) and of memory per parked poll (RSS growth / N),
against N, for every peer in the file.
"""

import csv
import math
import os
import statistics
import sys
from collections import defaultdict
from pathlib import Path

COLOURS = {
    "tower-push-demo": "#1f6fb4",
    "tower-push": "#1f6fb4",
    "nchan": "#c8402a",
    "tower-push-demo-h2": "#3a8a3a",
}
LABELS = {
    "tower-push-demo": "tower-push demo program",
    "tower-push": "tower-push (in-process server)",
    "nchan": "nginx + Nchan",
    "tower-push-demo-h2": "tower-push demo over HTTP/2, 100 polls a connection",
}
FALLBACK_COLOURS = ["#3a8a3a", "#7a4fa0", "#a0782a"]

PANEL_W, PANEL_H = 420, 300
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 64, 16, 40, 48
GAP = 24
TOP = 56
LEGEND_H = 64


def default_csv():
    target = os.environ.get("CARGO_TARGET_DIR") or "target"
    return Path(target) / "push-scaling.csv"


def read(path):
    """{peer: {n: {"p50": [..], "p99": [..], "kib": [..]}}} and the number of runs."""
    data = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    runs = set()
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            n = int(row["n"])
            figures = data[row["peer"]][n]
            figures["p50"].append(float(row["p50_ms"]))
            figures["p99"].append(float(row["p99_ms"]))
            figures["kib"].append(float(row["kib_per_poll"]))
            runs.add(row["run"])
    if not data:
        sys.exit(f"{path}: no rows")
    return data, len(runs)


def nice_ticks(high, count=5):
    """Tick values from 0 to at least `high`, on a 1/2/5 step."""
    if high <= 0:
        high = 1.0
    raw = high / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(s * power for s in (1, 2, 2.5, 5, 10) if s * power >= raw)
    top = math.ceil(high / step - 1e-9) * step
    ticks = []
    value = 0.0
    while value <= top + step / 2:
        ticks.append(round(value, 10))
        value += step
    return ticks


def fmt(value):
    if value >= 1000 and value % 1000 == 0:
        return f"{int(value) // 1000}k"
    if value == int(value):
        return str(int(value))
    return f"{value:g}"


def esc(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class Panel:
    def __init__(self, x0, title, y_label, x_max, y_max):
        self.x0 = x0
        self.title = title
        self.y_label = y_label
        self.x_ticks = nice_ticks(x_max)
        self.y_ticks = nice_ticks(y_max)
        self.plot_w = PANEL_W - MARGIN_L - MARGIN_R
        self.plot_h = PANEL_H - MARGIN_T - MARGIN_B

    def x(self, value):
        return self.x0 + MARGIN_L + value / self.x_ticks[-1] * self.plot_w

    def y(self, value):
        return TOP + MARGIN_T + self.plot_h - value / self.y_ticks[-1] * self.plot_h

    def frame(self):
        out = []
        left, right = self.x(0), self.x(self.x_ticks[-1])
        bottom, top = self.y(0), self.y(self.y_ticks[-1])
        out.append(
            f'<text x="{(left + right) / 2:.1f}" y="{TOP + 22}" class="title">'
            f"{esc(self.title)}</text>"
        )
        for tick in self.y_ticks:
            y = self.y(tick)
            out.append(f'<line x1="{left:.1f}" y1="{y:.1f}" x2="{right:.1f}" y2="{y:.1f}" class="grid"/>')
            out.append(f'<text x="{left - 6:.1f}" y="{y + 4:.1f}" class="ytick">{fmt(tick)}</text>')
        for tick in self.x_ticks:
            x = self.x(tick)
            out.append(f'<line x1="{x:.1f}" y1="{bottom:.1f}" x2="{x:.1f}" y2="{bottom + 4:.1f}" class="axis"/>')
            out.append(f'<text x="{x:.1f}" y="{bottom + 18:.1f}" class="xtick">{fmt(tick)}</text>')
        out.append(f'<line x1="{left:.1f}" y1="{bottom:.1f}" x2="{right:.1f}" y2="{bottom:.1f}" class="axis"/>')
        out.append(f'<line x1="{left:.1f}" y1="{bottom:.1f}" x2="{left:.1f}" y2="{top:.1f}" class="axis"/>')
        out.append(
            f'<text x="{(left + right) / 2:.1f}" y="{bottom + 38:.1f}" class="label">'
            "parked polls (N)</text>"
        )
        cy = (top + bottom) / 2
        out.append(
            f'<text x="{self.x0 + 16}" y="{cy:.1f}" class="label" '
            f'transform="rotate(-90 {self.x0 + 16} {cy:.1f})">{esc(self.y_label)}</text>'
        )
        return out

    def series(self, points, colour, dashed, marker, title):
        """A line through `points` [(n, value)], with a marker and a tooltip at each."""
        out = []
        coords = " ".join(f"{self.x(n):.1f},{self.y(v):.1f}" for n, v in points)
        dash = ' stroke-dasharray="6 4"' if dashed else ""
        out.append(f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
        for n, value in points:
            x, y = self.x(n), self.y(value)
            tip = f"<title>{esc(title)}, N={n}: {value:.2f}</title>"
            if marker == "square":
                out.append(
                    f'<rect x="{x - 4:.1f}" y="{y - 4:.1f}" width="8" height="8" '
                    f'fill="{colour}">{tip}</rect>'
                )
            else:
                out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="white" '
                           f'stroke="{colour}" stroke-width="2">{tip}</circle>')
        return out


def main():
    csv_path = Path(sys.argv[1]) if len(sys.argv) > 1 else default_csv()
    svg_path = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).with_name("scaling.svg")
    data, runs = read(csv_path)
    known = list(COLOURS)
    peers = sorted(data, key=lambda p: (known.index(p) if p in known else len(known), p))
    colours = dict(COLOURS)
    for i, peer in enumerate(p for p in peers if p not in colours):
        colours[peer] = FALLBACK_COLOURS[i % len(FALLBACK_COLOURS)]

    medians = {
        peer: {
            n: {key: statistics.median(values) for key, values in figures.items()}
            for n, figures in sorted(data[peer].items())
        }
        for peer in peers
    }
    x_max = max(n for peer in peers for n in medians[peer])
    ms_max = max(m["p99"] for peer in peers for m in medians[peer].values())
    kib_max = max(m["kib"] for peer in peers for m in medians[peer].values())

    fanout = Panel(0, "fan-out after one publish", "ms, publish to last byte", x_max, ms_max)
    memory = Panel(PANEL_W + GAP, "memory per parked poll", "KiB, RSS growth / N", x_max, kib_max)

    width = 2 * PANEL_W + GAP
    height = TOP + PANEL_H + LEGEND_H
    body = []
    body.append(
        f'<text x="{width / 2}" y="24" class="heading">How cost grows with parked long polls '
        f"(medians of {runs} run{'s' if runs != 1 else ''})</text>"
    )
    body += fanout.frame()
    body += memory.frame()
    for peer in peers:
        rows = medians[peer]
        colour = colours[peer]
        name = LABELS.get(peer, peer)
        body += fanout.series([(n, m["p50"]) for n, m in rows.items()], colour, True, "circle", f"{name} p50 ms")
        body += fanout.series([(n, m["p99"]) for n, m in rows.items()], colour, False, "square", f"{name} p99 ms")
        body += memory.series([(n, m["kib"]) for n, m in rows.items()], colour, False, "square", f"{name} KiB")

    # Legend: one entry per peer, then the two line styles.
    y = TOP + PANEL_H + 20
    x = MARGIN_L
    for peer in peers:
        colour = colours[peer]
        body.append(f'<rect x="{x}" y="{y - 9}" width="14" height="10" fill="{colour}"/>')
        label = LABELS.get(peer, peer)
        body.append(f'<text x="{x + 20}" y="{y}" class="legend">{esc(label)}</text>')
        # About 7 pixels per character at 12 px, and room before the next entry.
        x += max(150, 20 + 7 * len(label) + 24)
    if x + 200 > width:
        x, y = MARGIN_L, y + 20
    body.append(f'<line x1="{x}" y1="{y - 4}" x2="{x + 28}" y2="{y - 4}" stroke="#444" stroke-width="2"/>')
    body.append(f'<rect x="{x + 10}" y="{y - 8}" width="8" height="8" fill="#444"/>')
    body.append(f'<text x="{x + 36}" y="{y}" class="legend">p99 / KiB</text>')
    x += 130
    body.append(
        f'<line x1="{x}" y1="{y - 4}" x2="{x + 28}" y2="{y - 4}" stroke="#444" '
        'stroke-width="2" stroke-dasharray="6 4"/>'
    )
    body.append(f'<circle cx="{x + 14}" cy="{y - 4}" r="4" fill="white" stroke="#444" stroke-width="2"/>')
    body.append(f'<text x="{x + 36}" y="{y}" class="legend">p50</text>')

    style = """
  text { font-family: sans-serif; fill: #222; }
  .heading { font-size: 15px; font-weight: bold; text-anchor: middle; }
  .title { font-size: 13px; text-anchor: middle; }
  .label { font-size: 12px; text-anchor: middle; }
  .xtick { font-size: 11px; text-anchor: middle; }
  .ytick { font-size: 11px; text-anchor: end; }
  .legend { font-size: 12px; }
  .grid { stroke: #e4e4e4; stroke-width: 1; }
  .axis { stroke: #444; stroke-width: 1; }
"""
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">\n'
        f"<style>{style}</style>\n"
        f'<rect width="{width}" height="{height}" fill="white"/>\n'
        + "\n".join(body)
        + "\n</svg>\n"
    )
    svg_path.write_text(svg)
    print(f"wrote {svg_path} from {csv_path}")


if __name__ == "__main__":
    main()
