#!/usr/bin/env python
"""Ratio tables from a pytest-benchmark JSON file.

    python benchmarks/report.py FILE.json [--md]

Per benchmark group ("<op> <fwd|fwd+bwd> <shape>", or any other group name) and impl: the median
time, the speedup over ``ref`` and over ``compile`` (torch.compile of ref) of the same group, and,
when ``extra_info`` has ``bytes`` (bytes an ideal kernel moves), the achieved bandwidth and its
fraction of the copy bandwidth measured in the same file: the fastest impl of the group
``copy <shape>`` with the same shape, else of the largest ``copy`` group (said in the output).
``--md`` prints markdown (for the README).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple


def _shape_of(group: str) -> str:
    return group.split()[-1] if group.split() else ""


def load(path: str):
    with open(path) as f:
        data = json.load(f)
    groups: "OrderedDict[str, List[dict]]" = OrderedDict()
    for bm in data.get("benchmarks", []):
        group = bm.get("group") or bm.get("name")
        info = bm.get("extra_info", {}) or {}
        impl = info.get("impl") or bm.get("param") or bm.get("name")
        row = {
            "impl": str(impl),
            "median": float(bm["stats"]["median"]),
            "bytes": info.get("bytes"),
            "device": info.get("device"),
        }
        groups.setdefault(group, []).append(row)
    return data, groups


def copy_bandwidths(groups) -> Dict[str, Tuple[float, str, int]]:
    """shape -> (best GB/s, impl, bytes) over the 'copy <shape>' groups."""
    out = {}
    for group, rows in groups.items():
        if group.split()[0] != "copy":
            continue
        best = None
        for r in rows:
            if r["bytes"]:
                gbs = r["bytes"] / r["median"] / 1e9
                if best is None or gbs > best[0]:
                    best = (gbs, r["impl"], int(r["bytes"]))
        if best is not None:
            out[_shape_of(group)] = best
    return out


def _copy_ref(shape: str, copies) -> Optional[Tuple[float, str, str]]:
    if shape in copies:
        gbs, impl, _ = copies[shape]
        return gbs, impl, shape
    if not copies:
        return None
    big = max(copies, key=lambda s: copies[s][2])
    gbs, impl, _ = copies[big]
    return gbs, impl, big + " (largest)"


def build(groups):
    copies = copy_bandwidths(groups)
    table = []
    for group, rows in groups.items():
        med = {r["impl"]: r["median"] for r in rows}
        shape = _shape_of(group)
        is_copy = group.split()[0] == "copy"
        cref = _copy_ref(shape, copies) if not is_copy else None
        for r in sorted(rows, key=lambda r: r["median"], reverse=True):
            gbs = r["bytes"] / r["median"] / 1e9 if r["bytes"] else None
            if is_copy:
                frac, cnote = None, ""
            else:
                frac = gbs / cref[0] if (gbs is not None and cref) else None
                cnote = f"{cref[1]} {cref[2]}" if cref else ""
            table.append(OrderedDict(
                group=group,
                impl=r["impl"],
                median_ms=r["median"] * 1e3,
                vs_ref=(med["ref"] / r["median"]) if "ref" in med else None,
                vs_compile=(med["compile"] / r["median"]) if "compile" in med else None,
                gbs=gbs,
                frac_copy=frac,
                copy_ref=cnote,
            ))
    return table, copies


def _fmt(v, spec, suffix=""):
    return "-" if v is None else format(v, spec) + suffix


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1].strip() if __doc__ else None)
    ap.add_argument("json", help="pytest-benchmark JSON (--benchmark-json)")
    ap.add_argument("--md", action="store_true", help="markdown tables")
    args = ap.parse_args(argv)
    data, groups = load(args.json)
    if not groups:
        print(f"{args.json}: no benchmarks", file=sys.stderr)
        return 1
    table, copies = build(groups)
    mi = data.get("machine_info", {})
    devices = sorted({r["device"] for rows in groups.values() for r in rows if r.get("device")})
    header = (f"{args.json}: {len(table)} benchmarks; device {', '.join(devices) or '?'}; "
              f"cpu {mi.get('cpu', {}).get('brand_raw', '?')}; {data.get('datetime', '')}")
    note = ("x ref / x compile: speedup over the ref / compile impl of the same group (median times). "
            "GB/s: extra_info bytes (ideal traffic) / median. % copy: GB/s over the fastest plain copy "
            "('copy <shape>' group) of the same shape in this file, else of the largest copy measured.")
    if copies:
        note += " Copy bandwidth: " + ", ".join(f"{s} {v[0]:.1f} GB/s ({v[1]})" for s, v in copies.items()) + "."
    cols = ["group", "impl", "median ms", "x ref", "x compile", "GB/s", "% copy"]

    def cells(row):
        return [row["group"], row["impl"], _fmt(row["median_ms"], ".3f"), _fmt(row["vs_ref"], ".2f"),
                _fmt(row["vs_compile"], ".2f"), _fmt(row["gbs"], ".1f"),
                _fmt(None if row["frac_copy"] is None else 100 * row["frac_copy"], ".0f", "%")]

    if args.md:
        print(f"_{header}_\n")
        print("| " + " | ".join(cols) + " |")
        print("|" + "|".join(["---"] * 2 + ["---:"] * (len(cols) - 2)) + "|")
        for row in table:
            print("| " + " | ".join(cells(row)) + " |")
        print(f"\n{note}")
        return 0
    print(header)
    print(note)
    widths = [max(len(c), *(len(cells(r)[i]) for r in table)) for i, c in enumerate(cols)]
    last = None
    for row in table:
        if row["group"] != last:
            print()
            print("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cols, widths))))
            last = row["group"]
        print("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells(row), widths))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
