"""Kernels per loop iteration of a compiled XLA program, read from its optimized HLO text.

`per_iteration(compiled.as_text())` walks the body of the program's outermost while loop
(a training chunk's `lax.scan` over env steps) and counts the instructions that run as
their own kernel: every fusion, and every unfused op that is not plumbing (parameter,
constant, tuple, get-tuple-element, bitcast). A nested while counts its known trip count
times its body; a conditional counts its costliest branch. On a GPU each counted op is
about one kernel launch, and every conditional one device-to-host copy of its predicate,
so fewer of both is the CPU-side evidence of a shorter iteration. CPU fusion differs from
GPU fusion (and the CPU lowers each threefry hash to a rolled while loop, which a GPU
lowers unrolled), so compare counts only between programs compiled for the same backend.
"""
from __future__ import annotations

import collections
import re

PLUMBING = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast"}


def _computations(text: str):
    comps, cur, entry = {}, None, None
    for line in text.splitlines():
        head = re.match(r"^(ENTRY )?%?([\w.\-]+) .*\{$", line)
        if head and not line.startswith(" "):
            cur = head.group(2)
            comps[cur] = []
            entry = cur if head.group(1) else entry
            continue
        if cur and "=" in line:
            op = re.search(r"=\s.*?\s([a-z][a-z\-]*)\(", line)
            if op:
                comps[cur].append((op.group(1), line))
    return comps, entry


def per_iteration(text: str, steps_per_body: int = 1) -> dict:
    """{"kernels": ops run per iteration of the outermost loop, "conditionals": its
    conditionals, "whiles": its nested while loops (each iteration of them counted)},
    divided by `steps_per_body` where one loop body lays out several steps."""
    comps, entry = _computations(text)

    def walk(name: str, mult: int, acc: collections.Counter):
        for op, line in comps[name]:
            if op in PLUMBING:
                continue
            acc["kernels"] += mult
            if op == "while":
                body = re.search(r"body=%?([\w.\-]+)", line).group(1)
                cond = re.search(r"condition=%?([\w.\-]+)", line).group(1)
                trips = re.search(r'known_trip_count":\{"n":"(\d+)"', line)
                n = int(trips.group(1)) if trips else 1
                acc["whiles"] += mult
                walk(body, mult * n, acc)
                walk(cond, mult * n, acc)
            elif op == "conditional":
                acc["conditionals"] += mult
                listed = re.search(r"branch_computations=\{([^}]*)\}", line)
                names = ([b.strip().lstrip("%") for b in listed.group(1).split(",")] if listed else
                         [re.search(k + r"=%?([\w.\-]+)", line).group(1) for k in ("true_computation", "false_computation")])
                branches = []
                for b in names:
                    sub = collections.Counter()
                    walk(b, mult, sub)
                    branches.append(sub)
                acc.update(max(branches, key=lambda c: c["kernels"]))

    loops = [line for op, line in comps[entry] if op == "while"]
    acc = collections.Counter()
    if loops:
        walk(re.search(r"body=%?([\w.\-]+)", loops[0]).group(1), 1, acc)
    return {k: acc[k] / steps_per_body for k in ("kernels", "conditionals", "whiles")}
