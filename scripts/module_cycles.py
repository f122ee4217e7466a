#!/usr/bin/env python3
"""Module import cycles of a crate's library: which top-level modules of
`src/` use which (`crate::m`, `use crate::{m, ...}`), and the strongly
connected components with more than one module. Usage:
    python3 scripts/module_cycles.py host-example/src
Exit status 1 when there is a cycle. `./dev lint` runs it on host-example."""
import os, re, sys

src = sys.argv[1] if len(sys.argv) > 1 else "host-example/src"
mods = {}
for entry in sorted(os.listdir(src)):
    path = os.path.join(src, entry)
    if entry.endswith(".rs") and entry not in ("lib.rs", "main.rs"):
        mods[entry[:-3]] = [path]
    elif os.path.isdir(path) and os.path.exists(os.path.join(path, "mod.rs")):
        mods[entry] = [os.path.join(root, f) for root, _, fs in os.walk(path) for f in fs if f.endswith(".rs")]

def uses(text):
    found = set(re.findall(r"crate::(\w+)", text))
    for group in re.findall(r"use crate::\{([^}]*)\}", text, re.S):
        found |= set(re.findall(r"(?:^|,)\s*(\w+)", group))
    return found

graph = {}
for m, files in mods.items():
    text = "".join(open(f).read() for f in files)
    text = re.sub(r"#\[cfg\(test\)\]\s*mod tests \{.*", "", text, flags=re.S)  # unit tests may use anything
    graph[m] = sorted(d for d in uses(text) if d in mods and d != m)

# Tarjan's strongly connected components.
index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]
def visit(v):
    index[v] = low[v] = counter[0]; counter[0] += 1
    stack.append(v); on.add(v)
    for w in graph[v]:
        if w not in index:
            visit(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        scc = []
        while True:
            w = stack.pop(); on.discard(w); scc.append(w)
            if w == v: break
        sccs.append(sorted(scc))
sys.setrecursionlimit(10000)
for v in graph:
    if v not in index:
        visit(v)
cycles = [s for s in sccs if len(s) > 1]
for m in sorted(graph):
    print(f"{m:16} -> {', '.join(graph[m]) or '-'}")
print(f"{len(mods)} modules; {len(cycles)} cycle(s)" + "".join(f"\n  cycle of {len(c)}: {', '.join(c)}" for c in cycles))
sys.exit(1 if cycles else 0)
