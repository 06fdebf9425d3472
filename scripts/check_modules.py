"""Fails when the modules of a crate depend on each other in a circle.

    python3 scripts/check_modules.py [CRATE_SRC_DIR...]     (default: crates/*/src)
    python3 scripts/check_modules.py --self-test            (the checker on crates made to fail)

An edge is a real path in the code: `use crate::a::…`, `use super::…` (resolved), or an inline
`crate::a::…` path, outside comments and outside `#[cfg(test)]` modules (a test may reach
anywhere). Edges are drawn between sibling modules: `run/dispatch.rs` using `crate::spec::Spec`
is the edge `run → spec` among the crate's top-level modules, and using `crate::run::events`
is `dispatch → events` inside `run/`. Each strongly connected set of siblings is printed with
the lines that make it, and the exit code is 1 if there is any.
"""

import re
import sys
from pathlib import Path


def module_of(src, path):
    rel = path.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts.pop()
    return tuple(parts)


def strip_comments_and_strings(text):
    """Blanks out comments and the insides of string and char literals, keeping line breaks."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            i = j
            continue
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("\n" * text.count("\n", i, j))
            i = j
            continue
        raw = re.match(r'r(#*)"', text[i : i + 10]) if c == "r" and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")) else None
        if raw:
            hashes = raw.group(1)
            end = '"' + hashes
            j = text.find(end, i + len(raw.group(0)))
            j = n if j < 0 else j + len(end)
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j
            continue
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j + 1
            continue
        if c == "'":
            m = re.match(r"'(\\.|\\u\{[0-9a-fA-F]+\}|[^\\'])'", text[i : i + 12])
            if m:
                out.append("' '")
                i += len(m.group(0))
                continue
        out.append(c)
        i += 1
    return "".join(out)


def strip_test_modules(text):
    """Removes `#[cfg(test)] mod name { … }` blocks (braces matched on comment-free text)."""
    while True:
        m = re.search(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{", text)
        if not m:
            return text
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        text = text[: m.start()] + "\n" * text.count("\n", m.start(), j) + text[j:]


def use_tree_paths(tree):
    """`a::{b, c::{d, e}}` → [a::b, a::c::d, a::c::e] (each a list of segments)."""
    tree = re.sub(r"\s+", "", tree)
    brace = tree.find("{")
    if brace < 0:
        return [[s for s in re.sub(r"as\w+$", "", tree).split("::") if s]]
    prefix = [s for s in tree[:brace].split("::") if s]
    inner = tree[brace + 1 : tree.rfind("}")]
    parts, depth, start = [], 0, 0
    for k, ch in enumerate(inner):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(inner[start:k])
            start = k + 1
    parts.append(inner[start:])
    paths = []
    for p in parts:
        if p:
            paths.extend(prefix + q for q in use_tree_paths(p))
    return paths


def references(module, text):
    """(line, absolute segment list) for every crate-relative path in the text."""
    found = []
    for m in re.finditer(r"\buse\s+([^;]+);", text):
        line = text.count("\n", 0, m.start()) + 1
        for path in use_tree_paths(m.group(1)):
            resolved = resolve(module, path)
            if resolved is not None:
                found.append((line, resolved))
    without_uses = re.sub(r"\buse\s+[^;]+;", lambda u: "\n" * u.group(0).count("\n"), text)
    for m in re.finditer(r"\bcrate((?:::\w+)+)", without_uses):
        line = without_uses.count("\n", 0, m.start()) + 1
        found.append((line, [s for s in m.group(1).split("::") if s]))
    for m in re.finditer(r"\bsuper((?:::\w+)+)", without_uses):
        line = without_uses.count("\n", 0, m.start()) + 1
        resolved = resolve(module, ["super"] + [s for s in m.group(1).split("::") if s])
        if resolved is not None:
            found.append((line, resolved))
    return found


def resolve(module, path):
    if not path:
        return None
    if path[0] == "crate":
        return path[1:]
    if path[0] == "super":
        base = list(module)
        while path and path[0] == "super":
            if not base:
                return None
            base.pop()
            path = path[1:]
        return base + path
    if path[0] == "self":
        return list(module) + path[1:]
    return None


def target_module(modules, segments):
    best = ()
    for k in range(1, len(segments) + 1):
        if tuple(segments[:k]) in modules:
            best = tuple(segments[:k])
        else:
            break
    return best


def strongly_connected(nodes, edges):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            out.append(sorted(group))

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return [g for g in out if len(g) > 1]


def check(src):
    files = sorted(src.rglob("*.rs"))
    modules = {module_of(src, f): f for f in files}
    # parent → {child → {child: [(file, line, path)]}}
    edges = {}
    for module, path in modules.items():
        text = strip_test_modules(strip_comments_and_strings(path.read_text()))
        for line, segments in references(module, text):
            target = target_module(modules, segments)
            k = 0
            while k < len(module) and k < len(target) and module[k] == target[k]:
                k += 1
            if k == len(module) or k == len(target):
                continue  # the same module, a parent or a child
            parent = module[:k]
            a, b = module[: k + 1], target[: k + 1]
            where = f"{path}:{line} uses {'::'.join(('crate',) + tuple(segments))}"
            edges.setdefault(parent, {}).setdefault(a, {}).setdefault(b, []).append(where)
    problems = 0
    for parent, graph in sorted(edges.items()):
        nodes = set(graph) | {b for targets in graph.values() for b in targets}
        adjacency = {a: set(targets) for a, targets in graph.items()}
        for group in strongly_connected(nodes, adjacency):
            problems += 1
            names = ", ".join("::".join(g) for g in group)
            inside = "::".join(parent) or "the crate root"
            print(f"{src}: a module circle under {inside}: {names}")
            members = set(group)
            for a in group:
                for b, wheres in sorted(graph.get(a, {}).items()):
                    if b in members:
                        print(f"  {'::'.join(a)} → {'::'.join(b)}: {wheres[0]}"
                              + (f" (and {len(wheres) - 1} more)" if len(wheres) > 1 else ""))
    return problems


def self_test():
    """The checker must find a circle through `use`, inline paths and `super::`, and must not
    see one in comments, strings, test modules or parent/child references."""
    import tempfile

    def crate(files):
        d = Path(tempfile.mkdtemp())
        for name, text in files.items():
            (d / name).parent.mkdir(parents=True, exist_ok=True)
            (d / name).write_text(text)
        return d

    circles = {
        "use": {"lib.rs": "mod a; mod b;", "a.rs": "use crate::b::B;", "b.rs": "use crate::{a::A};"},
        "inline": {"lib.rs": "", "a.rs": "fn f() { crate::b::g() }", "b.rs": "use crate::a::{self, A};"},
        "nested": {"lib.rs": "", "run/mod.rs": "", "run/x.rs": "use super::y::Y;",
                   "run/y.rs": "fn f() -> crate::run::x::X {}"},
        "folders": {"lib.rs": "", "spec/mod.rs": "use crate::run::plan::P;", "run/mod.rs": "pub mod plan;",
                    "run/plan.rs": "use crate::spec::S;"},
    }
    clean = {
        "comments": {"lib.rs": "", "a.rs": "// crate::b::B\n/* use crate::b::B; */ use crate::b::B;",
                     "b.rs": "const S: &str = \"crate::a::A\";"},
        "tests": {"lib.rs": "", "a.rs": "use crate::b::B;",
                  "b.rs": "#[cfg(test)]\nmod tests {\n    use crate::a::A;\n    fn f() { let _ = '{'; }\n}"},
        "parent": {"lib.rs": "", "run/mod.rs": "use crate::run::x::X;", "run/x.rs": "use super::Y; use crate::run::Z;"},
    }
    import contextlib, io
    failures = []
    for name, files in circles.items():
        with contextlib.redirect_stdout(io.StringIO()):
            if check(crate(files)) != 1:
                failures.append(f"missed the circle in `{name}`")
    for name, files in clean.items():
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            if check(crate(files)) != 0:
                failures.append(f"saw a circle in `{name}`: {out.getvalue()}")
    for f in failures:
        print("self-test:", f)
    if not failures:
        print(f"self-test: {len(circles)} circles found, {len(clean)} clean crates passed")
    return 1 if failures else 0


def main(args):
    if args == ["--self-test"]:
        return self_test()
    root = Path(__file__).resolve().parent.parent
    dirs = [Path(a) for a in args] or sorted(root.glob("crates/*/src"))
    problems = sum(check(d) for d in dirs)
    if problems:
        print(f"{problems} module circle(s)")
        return 1
    print(f"no module circles in {len(dirs)} crate(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
