#!/usr/bin/env python3
"""SVG plot of the herd benchmark (no matplotlib needed): for each run, HSM unwraps/s and budget
refusals (deferred names)/s + HTTP 429s/s over time, from herd.py's JSON.
Usage: plot.py RESULTS.json OUT.svg"""
import json
import sys

W, H, ML, MR, MT, MB = 900, 260, 70, 20, 30, 40
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]


def panel(y0, title, runs, key, ymax, hline=None, hlabel=""):
    out = [f'<g transform="translate(0,{y0})">',
           f'<text x="{ML}" y="18" font-size="14" font-weight="bold">{title}</text>']
    pw, ph = W - ML - MR, H - MT - MB
    tmax = max((r["rates"][-1]["t"] for r in runs if r["rates"]), default=1)
    tmax = max(tmax, 1)

    def X(t):
        return ML + pw * t / tmax

    def Y(v):
        return MT + ph * (1 - min(v, ymax) / ymax)
    out.append(f'<rect x="{ML}" y="{MT}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>')
    for k in range(6):
        v = ymax * k / 5
        out.append(f'<text x="{ML - 6}" y="{Y(v) + 4:.1f}" font-size="11" text-anchor="end">'
                   f'{v:.0f}</text>')
        out.append(f'<line x1="{ML}" x2="{ML + pw}" y1="{Y(v):.1f}" y2="{Y(v):.1f}" '
                   'stroke="#eee"/>')
    step = 10 if tmax <= 150 else 30
    t = 0
    while t <= tmax:
        out.append(f'<text x="{X(t):.1f}" y="{MT + ph + 15}" font-size="11" '
                   f'text-anchor="middle">{t}</text>')
        t += step
    out.append(f'<text x="{ML + pw / 2}" y="{MT + ph + 32}" font-size="12" '
               'text-anchor="middle">seconds since the first syncer started</text>')
    if hline is not None:
        out.append(f'<line x1="{ML}" x2="{ML + pw}" y1="{Y(hline):.1f}" y2="{Y(hline):.1f}" '
                   'stroke="#000" stroke-dasharray="6,4"/>')
        out.append(f'<text x="{ML + pw - 4}" y="{Y(hline) - 4:.1f}" font-size="11" '
                   f'text-anchor="end">{hlabel}</text>')
    for i, r in enumerate(runs):
        pts = " ".join(f"{X(p['t']):.1f},{Y(key(p)):.1f}" for p in r["rates"])
        c = COLORS[i % len(COLORS)]
        out.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.5" points="{pts}"/>')
        out.append(f'<text x="{ML + 10 + 230 * i}" y="{MT + 16}" font-size="12" fill="{c}">'
                   f'{r["name"]}</text>')
    out.append("</g>")
    return out


def main():
    d = json.load(open(sys.argv[1]))
    runs = d["runs"]
    rep = d["reports"][0]
    B, burst = rep["budget_ops_s"], rep["burst"]
    ops_max = max([B + burst] + [p["ops"] for r in runs for p in r["rates"]]) * 1.1
    ref_max = max([1] + [p["refused"] + p["http429"] for r in runs for p in r["rates"]]) * 1.1
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{2 * H + 30}" '
           'font-family="sans-serif">', '<rect width="100%" height="100%" fill="white"/>']
    svg += panel(0, f"HSM unwraps/s (0.5 s scrapes), budget B={B:g}/s, burst {burst}, "
                    f"data-key cache {rep['cache_ttl']}", runs, lambda p: p["ops"], ops_max,
                 B, f"B = {B:g}/s")
    svg += panel(H + 10, "refused by the budget (deferred names + 429s) per second", runs,
                 lambda p: p["refused"] + p["http429"], ref_max)
    svg.append("</svg>")
    with open(sys.argv[2], "w") as f:
        f.write("\n".join(svg) + "\n")


if __name__ == "__main__":
    main()
