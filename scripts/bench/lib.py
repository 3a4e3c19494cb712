#!/usr/bin/env python3
"""Helpers for bench-dns.sh.

    lib.py cpu PID                 CPU seconds (user+system) used so far by PID and its descendants
    lib.py lat RAW                 p50/p99 latency (µs) from a `dnsperf -v` log, as "p50 p99"
    lib.py table RESULTS.csv       the summary table (markdown) from the per-run CSV
"""
import collections
import os
import re
import statistics
import sys

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    fields = data[data.rindex(")") + 2:].split()
    return int(fields[1]), int(fields[11]) + int(fields[12])  # ppid, utime+stime


def cpu(root):
    children = collections.defaultdict(list)
    ticks = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid, t = _stat(entry)
            except (OSError, ValueError, IndexError):
                continue
            children[ppid].append(int(entry))
            ticks[int(entry)] = t
    total, todo = 0, [int(root)]
    while todo:
        pid = todo.pop()
        total += ticks.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total / TICK


def lat(raw):
    lats = []
    pattern = re.compile(r"^> \S+ \S+ \S+ ([\d.]+)")
    with open(raw, errors="replace") as f:
        for line in f:
            m = pattern.match(line)
            if m:
                lats.append(float(m.group(1)) * 1e6)
    if not lats:
        return "- -"
    lats.sort()
    pick = lambda p: lats[min(len(lats) - 1, int(round(p / 100 * (len(lats) - 1))))]
    return f"{pick(50):.0f} {pick(99):.0f}"


def table(csv_path):
    rows = collections.defaultdict(list)
    servers = []
    with open(csv_path) as f:
        header = f.readline().strip().split(",")
        for line in f:
            r = dict(zip(header, line.strip().split(",")))
            rows[(r["size"], r["mode"], r["test"], r["server"])].append(r)
            if r["server"] not in servers:
                servers.append(r["server"])
    med = lambda xs: statistics.median(xs) if xs else None
    keys = sorted({k[:3] for k in rows}, key=lambda k: (int(k[0]), k[1], k[2]))
    # With a baseline (an earlier sextant build in the same run), its ratio to knot too.
    # With the registry in etcd too, its ratio to the embedded store's.
    ratios = [(s, "knot") for s in ("sextant", "baseline") if s in servers and "knot" in servers]
    if "sextant-etcd" in servers and "sextant" in servers:
        ratios.append(("sextant-etcd", "sextant"))
    out = ["| services | mode | test | " + " | ".join(f"{s} qps | {s} CPU µs/q" for s in servers)
           + "".join(f" | {s}/{r} CPU" for s, r in ratios) + " | p50/p99 µs (" + ", ".join(servers) + ") |",
           "|---|---|---|" + "---:|---:|" * len(servers) + "---:|" * len(ratios) + "---|"]
    for size, mode, test in keys:
        cells, cpu_per_q, lat_cells = [], {}, []
        for s in servers:
            runs = rows.get((size, mode, test, s), [])
            qps = med([float(r["qps"]) for r in runs if r["qps"]])
            cpq = med([float(r["cpu_us_per_q"]) for r in runs if r["cpu_us_per_q"]])
            spread = ""
            if len(runs) > 1 and qps:
                vals = [float(r["qps"]) for r in runs if r["qps"]]
                spread = f" ±{(max(vals) - min(vals)) / 2 / qps * 100:.0f}%"
            cells.append(f"{qps / 1000:.1f}k{spread}" if qps else "-")
            cells.append(f"{cpq:.2f}" if cpq else "-")
            cpu_per_q[s] = cpq
            # The median of each percentile over the runs: one run's p99 can be a VM's hiccup.
            lat = [r for r in runs if r.get("p50_us", "-") != "-"]
            p50, p99 = med([float(r["p50_us"]) for r in lat]), med([float(r["p99_us"]) for r in lat])
            lat_cells.append(f"{p50:.0f}/{p99:.0f}" if lat else "-")
        ratio_cells = []
        for s, r in ratios:
            ratio = "-"
            if cpu_per_q.get(s) and cpu_per_q.get(r):
                ratio = f"{cpu_per_q[s] / cpu_per_q[r]:.3f}"
            ratio_cells.append(ratio)
        lat_text = ", ".join(lat_cells) if any(c != "-" for c in lat_cells) else ""
        out.append(f"| {size} | {mode} | {test} | " + " | ".join(cells + ratio_cells) + f" | {lat_text} |")
    return "\n".join(out)


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "cpu":
        print(f"{cpu(sys.argv[2]):.3f}")
    elif cmd == "lat":
        print(lat(sys.argv[2]))
    elif cmd == "table":
        print(table(sys.argv[2]))
    else:
        sys.exit(__doc__)
