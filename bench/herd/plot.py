#!/usr/bin/env python3
"""Plot of the herd benchmark (matplotlib, Debian python3-matplotlib): one column per
configuration (data-key cache off, cache on), each with its runs (herd, offset) over time:
HSM unwraps per second against the budget B, budget refusals per second, and syncers running.

Usage: plot.py OUT.png SERIES.csv [SERIES.csv ...]
Each SERIES.csv is what herd.py writes (herd<tag>.csv); the herd<tag>.json beside it gives the
budget (B, burst) and each run's totals for the legends. Rates are per second over the scrape
interval (~0.5 s) that ends at t, drawn as steps over that interval."""
import csv
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"herd": "#1f77b4", "offset": "#d62728"}


def load(path):
    runs = {}
    cache_ttl = ""
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            r = runs.setdefault(row["run"], {"t": [], "ops": [], "refused": [], "running": []})
            r["t"].append(float(row["t_s"]))
            r["ops"].append(float(row["unwraps_per_s"]))
            r["refused"].append(float(row["refused_names_per_s"]) + float(row["http429_per_s"]))
            r["running"].append(int(row["syncers_running"]))
            cache_ttl = row["cache_ttl"]
    if not runs:
        raise SystemExit(f"{path}: no rows")
    meta = {}
    js = os.path.splitext(path)[0] + ".json"
    if os.path.exists(js):
        with open(js) as f:
            meta = json.load(f)
    return runs, cache_ttl, meta


def kind(name):
    return "offset" if name.startswith("offset") else "herd"


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    out, paths = sys.argv[1], sys.argv[2:]
    cols = [load(p) for p in paths]
    fig, ax = plt.subplots(3, len(cols), figsize=(6.5 * len(cols), 10), sharex="col",
                           sharey="row", squeeze=False, constrained_layout=True)
    for c, (runs, ttl, meta) in enumerate(cols):
        reps = {r["run"]: r for r in meta.get("reports", [])}
        off = ttl in ("", "0", "0s")
        ax[0][c].set_title(f"data-key cache {'off' if off else 'on'} (cache_ttl = {ttl})")
        tmax = 0.0
        for name, r in runs.items():
            # a step per interval: the rate at t held over the interval that ends at t
            t = [0.0] + r["t"]
            rep = reps.get(name, {})
            conv = rep.get("time_to_converge_s")
            label = (f"{kind(name)}: {rep.get('converged', '?')}/{rep.get('syncers', '?')} "
                     f"converged in {conv if conv is not None else '-'} s, "
                     f"{rep.get('unwraps', '?')} unwraps")
            color = COLORS[kind(name)]
            ax[0][c].step(t, [r["ops"][0]] + r["ops"], where="pre", color=color, lw=1.2,
                          label=label)
            ax[1][c].step(t, [r["refused"][0]] + r["refused"], where="pre", color=color,
                          lw=1.2, label=kind(name))
            ax[2][c].plot(r["t"], r["running"], color=color, lw=1.2, label=kind(name))
            tmax = max(tmax, r["t"][-1])
        rep0 = next(iter(reps.values()), {})
        if "budget_ops_s" in rep0:
            b, burst = rep0["budget_ops_s"], rep0["burst"]
            ax[0][c].axhline(b, color="black", ls="--", lw=1,
                             label=f"budget B = {b:g} unwraps/s (burst {burst})")
        ax[0][c].legend(loc="upper right", fontsize=8)
        ax[1][c].legend(loc="upper right", fontsize=8)
        ax[2][c].legend(loc="upper right", fontsize=8)
        ax[2][c].set_xlim(0, tmax * 1.02)
        ax[2][c].set_xlabel("time since the first syncer was launched (s)")
        for a in ax[:, c]:
            a.grid(True, alpha=0.3)
            a.set_ylim(bottom=0)
    ax[0][0].set_ylabel("HSM unwraps per second (1/s)")
    ax[1][0].set_ylabel("budget refusals per second (1/s)\n(deferred names + HTTP 429)")
    ax[2][0].set_ylabel("keybridge-sync processes running")
    # the herd's size from the summaries (it was always 1,000 before --apps was used)
    sizes = sorted({r.get("syncers") for _, _, m in cols for r in m.get("reports", [])
                    if r.get("syncers")})
    n = "/".join(f"{x:,}" for x in sizes) if sizes else "1,000"
    loads = [r.get("load1_before") for _, _, m in cols for r in m.get("reports", [])
             if r.get("load1_before") is not None]
    extra = (f"; machine load {min(loads):.0f}-{max(loads):.0f} on "
             f"{cols[0][2].get('machine', {}).get('cpus', '?')} CPUs" if loads else "")
    fig.suptitle(f"{n} keybridge-sync runs against one keybridged (20 shared secrets, "
                 f"just rotated{extra})", fontsize=12)
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main()
