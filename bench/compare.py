#!/usr/bin/env python3
"""Markdown tables comparing two harness reports (before/after), for docs/PERFORMANCE.md.

Usage: bench/compare.py BEFORE.json AFTER.json
Each figure is req/s; ratios are within one report (conduit ÷ peer, ÷ postgres alone,
gRPC ÷ REST, 5,000 ÷ 60 articles), so machine drift between reports cancels out.
"""

import json
import sys

SCENARIOS = ["tags", "list", "list-by-tag", "feed", "article", "create", "favorite"]


def index(report):
    return {(r["database"], r["articles"], r["scenario"], r["target"]): r for r in report["results"]}


def rate(idx, *key):
    r = idx.get(key)
    return r["requests_per_second"] if r else None


def fmt(v):
    return "–" if v is None else f"{v:,.0f}"


def ratio(a, b):
    return "–" if a is None or b in (None, 0) else f"{a / b:.2f}×"


def main(before_path, after_path):
    before, after = json.load(open(before_path)), json.load(open(after_path))
    b, a = index(before), index(after)
    groups = sorted({(k[0], k[1]) for k in a if k[0] != "none"}, key=lambda g: (g[0] != "sqlite", g[1]))
    for database, articles in groups:
        print(f"\n**{database}, {articles:,} articles** (req/s)\n")
        print("| scenario | REST before | REST after | gRPC before | gRPC after | gRPC÷REST after | peer | REST÷peer after | postgres alone | REST÷postgres after |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for s in SCENARIOS:
            rb, ra = rate(b, database, articles, s, "conduit-rest"), rate(a, database, articles, s, "conduit-rest")
            gb, ga = rate(b, database, articles, s, "conduit-grpc"), rate(a, database, articles, s, "conduit-grpc")
            if ra is None:
                continue
            peer = rate(a, database, articles, s, "peer-rest")
            pg = rate(a, database, articles, s, "postgres")
            print(f"| {s} | {fmt(rb)} | {fmt(ra)} | {fmt(gb)} | {fmt(ga)} | {ratio(ga, ra)} | {fmt(peer)} | {ratio(ra, peer)} | {fmt(pg)} | {ratio(ra, pg)} |")
    sizes = sorted({k[1] for k in a if k[0] != "none"})
    if len(sizes) >= 2:
        small, large = sizes[0], sizes[-1]
        print(f"\n**Flat with data**: REST throughput at {large:,} articles ÷ at {small:,}\n")
        print("| database | scenario | before | after |")
        print("|---|---|---|---|")
        for database in sorted({k[0] for k in a if k[0] != "none"}):
            for s in ["tags", "list", "list-by-tag", "feed", "article"]:
                kb = ratio(rate(b, database, large, s, "conduit-rest"), rate(b, database, small, s, "conduit-rest"))
                ka = ratio(rate(a, database, large, s, "conduit-rest"), rate(a, database, small, s, "conduit-rest"))
                print(f"| {database} | {s} | {kb} | {ka} |")
    print("\n**Stack cost** (one trivial handler, full stack ÷ bare server)\n")
    print("| | full stack | bare | full÷bare | p99 full | p99 bare |")
    print("|---|---|---|---|---|---|")
    for name, idx in (("before", b), ("after", a)):
        full, bare = idx.get(("none", 0, "stack", "stack-full")), idx.get(("none", 0, "stack", "stack-bare"))
        if full and bare:
            print(f"| {name} | {full['requests_per_second']:,.0f} | {bare['requests_per_second']:,.0f} | "
                  f"{full['requests_per_second'] / bare['requests_per_second']:.2f}× | {full['p99_ms']:.2f} ms | {bare['p99_ms']:.2f} ms |")


if __name__ == "__main__":
    main(*sys.argv[1:3])
