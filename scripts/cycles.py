#!/usr/bin/env python3
"""Import cycles between the files of each crate: exits 1 and names them when there is one.

A module depends on another when its code (outside its `#[cfg(test)]` module and comments)
names it: `use crate::a::…`, a `crate::a::…` path, `super::x` from a nested module, or a name
that lib.rs re-exports from `a` (`pub use a::X;`). lib.rs itself only declares and re-exports.

    scripts/cycles.py [ROOT]     # ROOT: the workspace (default: this script's parent's parent)
"""
import os
import re
import sys

TESTS = re.compile(r'#\[cfg\([^\]]*\btest\b[^\]]*\)\](?:\s*#\[[^\]]*\])*\s*mod\s+\w+\s*\{')
REEXPORT = re.compile(r'pub use (?:self::|crate::)?(\w+)::(?:\{([^}]*)\}|(\w+))')


def module_name(src, path):
    parts = os.path.relpath(path, src)[:-3].split(os.sep)
    if parts[-1] == 'mod':
        parts = parts[:-1]
    return '' if parts in (['lib'], ['main']) else '::'.join(parts)


def code_of(path):
    text = open(path, encoding='utf-8').read()
    m = TESTS.search(text)
    if m:
        text = text[:m.start()]
    return re.sub(r'//[^\n]*', '', text)


def crate_graph(src):
    mods = {}
    for d, _, files in os.walk(src):
        if os.path.relpath(d, src).split(os.sep)[0] == 'bin':
            continue
        for f in files:
            if f.endswith('.rs'):
                mods[module_name(src, os.path.join(d, f))] = os.path.join(d, f)
    names = set(mods)
    reexported = {}
    for root in ('lib.rs', 'main.rs'):
        path = os.path.join(src, root)
        if not os.path.exists(path):
            continue
        for m in REEXPORT.finditer(open(path, encoding='utf-8').read()):
            items = m.group(2).split(',') if m.group(2) else [m.group(3)]
            for item in items:
                item = item.strip().split(' as ')[-1].strip()
                if item and m.group(1) in names:
                    reexported[item] = m.group(1)
    edges = {m: set() for m in mods}
    for mod, path in mods.items():
        if not mod:
            continue
        text = code_of(path)
        refs = set(re.findall(r'crate::((?:\w+::)*\w+)', text))
        for group in re.findall(r'crate::\{([^}]*)\}', text):
            refs.update(p.strip().split('::')[0] for p in group.split(',') if p.strip())
        parent = mod.split('::')[:-1]
        refs.update('::'.join(parent + [r]) for r in re.findall(r'\bsuper::((?:\w+::)*\w+)', text))
        for ref in refs:
            parts = ref.split('::')
            if parts[0] in reexported and parts[0] not in names:
                parts = [reexported[parts[0]]] + parts
            for k in range(len(parts), 0, -1):
                target = '::'.join(parts[:k])
                if target in names:
                    related = target == mod or mod.startswith(target + '::') or target.startswith(mod + '::')
                    if target and not related:
                        edges[mod].add(target)
                    break
    return edges


def cycles(edges):
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), '..')
    found = 0
    crates = [os.path.join(root, 'crates', c, 'src') for c in sorted(os.listdir(os.path.join(root, 'crates')))]
    crates.append(os.path.join(root, 'bench', 'src'))
    for src in crates:
        if not os.path.isdir(src):
            continue
        edges = crate_graph(src)
        for comp in cycles(edges):
            found += 1
            crate = os.path.basename(os.path.dirname(os.path.normpath(src)))
            print(f'{crate}: import cycle between ' + ', '.join(comp))
            for v in comp:
                print(f'    {v} -> ' + ', '.join(w for w in sorted(edges[v]) if w in comp))
    if found:
        sys.exit(1)
    print('no import cycles between the files of any crate')


if __name__ == '__main__':
    main()
