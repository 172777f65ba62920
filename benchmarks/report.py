#!/usr/bin/env python
"""Ratio tables from a pytest-benchmark JSON file.

    python benchmarks/report.py FILE.json [--md]

Per benchmark group ("<op> <fwd|fwd+bwd> <shape>", or any other group name) and impl: the median
time, the speedup over ``ref`` and over ``compile`` (torch.compile of ref) of the same group, and,
when ``extra_info`` has ``bytes`` (bytes an ideal kernel moves), the achieved bandwidth and its
fraction of the bandwidth of each plain copy measured in the same file (group ``copy <shape>`` of
the same shape, else the largest ``copy`` group; ``copy_`` into a preallocated tensor and ``clone``).
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


def copy_bandwidths(groups) -> Dict[str, Dict[str, Tuple[float, int]]]:
    """shape -> {copy impl: (GB/s, bytes)} over the 'copy <shape>' groups."""
    out: Dict[str, Dict[str, Tuple[float, int]]] = {}
    for group, rows in groups.items():
        if group.split()[0] != "copy":
            continue
        for r in rows:
            if r["bytes"]:
                out.setdefault(_shape_of(group), {})[r["impl"]] = (r["bytes"] / r["median"] / 1e9, int(r["bytes"]))
    return out


def _copy_ref(shape: str, copies) -> Optional[Tuple[Dict[str, Tuple[float, int]], str]]:
    """The copy measurements to compare a group of this shape with: same shape, else the largest."""
    if shape in copies:
        return copies[shape], shape
    if not copies:
        return None
    big = max(copies, key=lambda s: max(v[1] for v in copies[s].values()))
    return copies[big], big + " (largest)"


def build(groups):
    copies = copy_bandwidths(groups)
    copy_impls = sorted({impl for per in copies.values() for impl in per})
    table = []
    for group, rows in groups.items():
        med = {r["impl"]: r["median"] for r in rows}
        shape = _shape_of(group)
        is_copy = group.split()[0] == "copy"
        cref = _copy_ref(shape, copies) if not is_copy else None
        for r in sorted(rows, key=lambda r: r["median"], reverse=True):
            gbs = r["bytes"] / r["median"] / 1e9 if r["bytes"] else None
            fracs = OrderedDict()
            for ci in copy_impls:
                ok = gbs is not None and cref is not None and ci in cref[0] and not is_copy
                fracs[ci] = gbs / cref[0][ci][0] if ok else None
            table.append(OrderedDict(
                group=group,
                impl=r["impl"],
                median_ms=r["median"] * 1e3,
                vs_ref=(med["ref"] / r["median"]) if "ref" in med else None,
                vs_compile=(med["compile"] / r["median"]) if "compile" in med else None,
                gbs=gbs,
                fracs=fracs,
                copy_ref=cref[1] if cref else "",
            ))
    return table, copies, copy_impls


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
    table, copies, copy_impls = build(groups)
    mi = data.get("machine_info", {})
    devices = sorted({r["device"] for rows in groups.values() for r in rows if r.get("device")})
    header = (f"{args.json}: {len(table)} benchmarks; device {', '.join(devices) or '?'}; "
              f"cpu {mi.get('cpu', {}).get('brand_raw', '?')}; {data.get('datetime', '')}")
    note = ("x ref / x compile: speedup over the ref / compile impl of the same group (median times). "
            "GB/s: extra_info bytes (ideal traffic) / median. % <copy impl>: that GB/s as a fraction of a "
            "plain copy of the same shape measured in this file ('copy <shape>' group; else the largest "
            "copy): copy_ writes into a preallocated tensor, clone allocates its output like an op does.")
    if copies:
        note += " Copy bandwidth: " + "; ".join(
            f"{s} " + ", ".join(f"{i} {v[0]:.1f} GB/s" for i, v in per.items()) for s, per in copies.items()) + "."
    cols = ["group", "impl", "median ms", "x ref", "x compile", "GB/s"] + [f"% {ci}" for ci in copy_impls]

    def cells(row):
        return [row["group"], row["impl"], _fmt(row["median_ms"], ".3f"), _fmt(row["vs_ref"], ".2f"),
                _fmt(row["vs_compile"], ".2f"), _fmt(row["gbs"], ".1f")] + [
                _fmt(None if f is None else 100 * f, ".0f", "%") for f in row["fracs"].values()]

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
