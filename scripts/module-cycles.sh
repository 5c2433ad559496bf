#!/usr/bin/env bash
# Fails when the files of a crate import each other in a circle.
#
#   scripts/module-cycles.sh                 # node/src and crds/src
#   scripts/module-cycles.sh operator/src    # another crate
#   scripts/module-cycles.sh -v node/src     # also the graph, and the circles
#                                            # between top-level modules
#
# The rule (docs/architecture.md, "Import cycles"): the module files of a
# crate (`a.rs`, `a/mod.rs`, `a/b.rs`) form a graph without circles: no task
# imports from the module that spawns it, no child module from its parent's
# mod.rs when the parent uses it. cargo compiles such circles happily, so
# this reads the source: every `use` tree (`crate::`, `super::`, `self::`,
# a child module's name) and every such path inline, outside comments and
# strings, resolved to the deepest module file it names. Test code is left
# out (tests.rs, *_tests.rs, tests/ and what follows a `#[cfg(test)]` line): a test
# may reach anywhere. Between top-level modules a circle through different
# files is allowed (ctx.rs uses scheduler/config.rs, scheduler/leader.rs
# uses ctx.rs); -v lists those. Needs only python3.
set -euo pipefail
cd "$(dirname "$0")/.."

verbose=0
if [[ ${1:-} == -v ]]; then
  verbose=1
  shift
fi
(($# > 0)) || set -- node/src crds/src

exec python3 - "$verbose" "$@" <<'PY'
import os
import re
import sys

verbose = sys.argv[1] == "1"
roots = sys.argv[2:]

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def is_test_file(name):
    return name == "tests.rs" or name.endswith("_tests.rs")


def code_of(text):
    """The text without comments, string contents and the test code at its end."""
    keep = []
    for line in text.splitlines():
        if line.strip().startswith("#[cfg(test)]"):
            break
        line = re.sub(r'"(?:\\.|[^"\\])*"', '""', line)
        keep.append(re.sub(r"//.*", "", line))
    return "\n".join(keep)


def module_files(root):
    """Module path (tuple) -> file, for every module file under root."""
    files = {}
    for dirpath, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d != "tests"]
        rel = os.path.relpath(dirpath, root)
        base = () if rel == "." else tuple(rel.split(os.sep))
        if base[:1] == ("bin",):
            continue
        for name in names:
            if not name.endswith(".rs") or is_test_file(name):
                continue
            path = os.path.join(dirpath, name)
            if name in ("mod.rs", "lib.rs", "main.rs"):
                files[base] = path
            else:
                files[base + (name[:-3],)] = path
    return files


def expand(tree):
    """`a::{b, c::{d, e}}` -> [[a, b], [a, c, d], [a, c, e]]."""
    tree = tree.strip()
    depth = 0
    for i, ch in enumerate(tree):
        if ch == "{":
            if depth == 0:
                prefix = [s for s in tree[:i].split("::") if s.strip()]
                inner = tree[i + 1 : tree.rindex("}")]
                parts, level, start = [], 0, 0
                for j, c in enumerate(inner):
                    if c == "{":
                        level += 1
                    elif c == "}":
                        level -= 1
                    elif c == "," and level == 0:
                        parts.append(inner[start:j])
                        start = j + 1
                parts.append(inner[start:])
                out = []
                for part in parts:
                    if part.strip():
                        for path in expand(part):
                            out.append([p.strip() for p in prefix] + path)
                return out
            depth += 1
    path = tree.split(" as ")[0]
    return [[s.strip() for s in path.split("::") if s.strip()]]


def reexports(files):
    """Module -> {name: path} for its `pub use` items, so that a path through
    a re-export (`crate::attach::Registry` for `attach::registry::Registry`)
    leads to the file that defines the item."""
    out = {}
    for mod, path in files.items():
        with open(path, encoding="utf-8") as f:
            code = code_of(f.read())
        names = {}
        for m in re.finditer(r"\bpub(?:\([^)]*\))?\s+use\s+([^;]+);", code):
            tree = m.group(1)
            for segments in expand(tree):
                alias = re.search(r"\bas\s+(" + IDENT + r")\s*$", tree)
                if segments and segments[-1] not in ("*", "self"):
                    names[segments[-1] if not alias else alias.group(1)] = segments
        out[mod] = names
    return out


def resolve(segments, here, files, exported, depth=0):
    """The module file a path leads to, from the module `here`."""
    if not segments or depth > 8:
        return None
    if segments[0] == "crate":
        base, rest = (), segments[1:]
    elif segments[0] in ("self", "super"):
        base, rest = here, segments
        while rest and rest[0] in ("self", "super"):
            if rest[0] == "super":
                base = base[:-1]
            rest = rest[1:]
    elif here + (segments[0],) in files:
        base, rest = here, segments
    else:
        return None
    target = base
    for i, seg in enumerate(rest):
        if target + (seg,) in files:
            target = target + (seg,)
            continue
        via = exported.get(target, {}).get(seg)
        if via and via[0] in ("crate", "self", "super") or (
            via and target + (via[0],) in files
        ):
            found = resolve(via + rest[i + 1 :], target, files, exported, depth + 1)
            if found:
                return found
        break
    return files.get(target)


def cycles(graph):
    """Strongly connected components with more than one member (Tarjan)."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def top(path, root):
    rel = os.path.relpath(path, root).split(os.sep)[0]
    return rel[:-3] if rel.endswith(".rs") else rel


def report(root, graph, evidence, what):
    found = cycles(graph)
    for component in found:
        print(f"{root}: import cycle among {what} {', '.join(component)}:")
        for a in component:
            for b in sorted(graph[a]):
                if b in component:
                    print(f"  {a} -> {b}  ({evidence[(a, b)]})")
    return found


failed = False
for root in roots:
    files = module_files(root)
    exported = reexports(files)
    by_file = {path: mod for mod, path in files.items()}
    graph = {path: set() for path in files.values()}
    evidence = {}
    for path, here in by_file.items():
        with open(path, encoding="utf-8") as f:
            code = code_of(f.read())
        refs = []
        for m in re.finditer(r"\buse\s+([^;]+);", code):
            line = code.count("\n", 0, m.start()) + 1
            refs += [(line, p) for p in expand(m.group(1))]
        rest = re.sub(r"\buse\s+[^;]+;", lambda m: "\n" * m.group(0).count("\n"), code)
        for m in re.finditer(rf"(?<![A-Za-z0-9_:])({IDENT}(?:::{IDENT})+)", rest):
            line = rest.count("\n", 0, m.start()) + 1
            refs.append((line, m.group(1).split("::")))
        for line, segments in refs:
            target = resolve(segments, here, files, exported)
            if target and target != path and not target.endswith("lib.rs"):
                graph[path].add(target)
                evidence.setdefault((path, target), f"{path}:{line}")
    if verbose:
        for path in sorted(graph):
            print(f"{path} -> {', '.join(sorted(graph[path])) or '-'}")
    if report(root, graph, evidence, "files"):
        failed = True
    else:
        print(f"{root}: no import cycle among its {len(graph)} files")
    # The same graph by top-level module, for information: a top-level module
    # may use a leaf file of another that uses it back (ctx uses
    # scheduler/config.rs, scheduler/leader.rs uses ctx).
    mods, mod_evidence = {}, {}
    for a, targets in graph.items():
        for b in targets:
            ta, tb = top(a, root), top(b, root)
            mods.setdefault(ta, set())
            mods.setdefault(tb, set())
            if ta != tb:
                mods[ta].add(tb)
                mod_evidence.setdefault((ta, tb), evidence[(a, b)])
    if verbose:
        report(root, mods, mod_evidence, "top-level modules (allowed; see above)")
sys.exit(1 if failed else 0)
PY
