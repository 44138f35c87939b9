#!/usr/bin/env python3
"""A figure of the house, for whoever changes it next: the size of the notebooks' export cells, the longest functions,
and the import graph of the `minisweep` modules. Exits 1 (`make test` runs it) when the graph breaks the structure:
an import cycle, a module that imports a later chapter, or a core that imports torch.

    python tools/house.py            # from the repository root
"""
import ast, json, re, statistics, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS, LIB = ROOT / 'nbs', ROOT / 'minisweep'


def export_cells(nb: Path) -> list:
    "Source of each `#| export` cell of a notebook."
    cells = json.loads(nb.read_text())['cells']
    srcs = [''.join(c['source']) for c in cells if c['cell_type'] == 'code']
    return [s for s in srcs if re.match(r'\s*#\|\s*export', s)]


def code_lines(src: str) -> int:
    "Lines of a cell that are neither blank nor nbdev directives."
    return sum(1 for l in src.splitlines() if l.strip() and not l.lstrip().startswith('#|'))


def definitions(src: str) -> int:
    "Top-level functions, classes and constants (ALL_CAPS assignments) a cell defines."
    try: tree = ast.parse(src)
    except SyntaxError: return 0
    n = 0
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)): n += 1
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id.isupper()
                                                  for t in node.targets): n += 1
    return n


def chapter_of() -> dict:
    """Each module's chapter: the name of the notebook whose `#| default_exp` makes it (notebooks read in name order:
    04_ < 04a_ < 04b_ < 05_)."""
    out = {}
    for nb in sorted(NBS.glob('[0-9]*.ipynb')):
        src = ''.join(json.loads(nb.read_text())['cells'][0]['source'])
        m = re.search(r'#\|\s*default_exp\s+(\S+)', src)
        if m: out[m.group(1)] = nb.stem
    return out


def top_packages(path: Path) -> set:
    "The top-level packages a module imports, at the top or inside functions."
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module: found.add(node.module.split('.')[0])
        elif isinstance(node, ast.Import): found.update(a.name.split('.')[0] for a in node.names)
    return found


def imports(path: Path) -> set:
    "The minisweep modules a module imports, at the top or inside functions."
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ''
            if node.level == 1: found.add(mod.split('.')[0] if mod else None)
            elif mod.startswith('minisweep.'): found.add(mod.split('.')[1])
            elif mod == 'minisweep': found.update(a.name for a in node.names if (LIB / f'{a.name}.py').exists())
        elif isinstance(node, ast.Import):
            found.update(a.name.split('.')[1] for a in node.names if a.name.startswith('minisweep.'))
    return {m for m in found if m and m != path.stem and (LIB / f'{m}.py').exists()}


def cycles(graph: dict) -> list:
    "Every elementary cycle's smallest representative (small graphs only)."
    seen, out = set(), []
    def walk(start, node, path):
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                key = frozenset(path)
                if key not in seen: seen.add(key); out.append(path + [start])
            elif nxt not in path and nxt > start: walk(start, nxt, path + [nxt])
    for n in sorted(graph): walk(n, n, [n])
    return out


def longest_functions(k: int = 8) -> list:
    "The `k` longest functions of the library, in lines."
    rows = []
    for py in sorted(LIB.glob('*.py')):
        if py.name.startswith('_'): continue
        for node in ast.walk(ast.parse(py.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                rows.append((node.end_lineno - node.lineno + 1, f'{py.stem}.{node.name}'))
    return sorted(rows, reverse=True)[:k]


def main():
    print('## Export cells (lines of code; definitions)\n')
    print('| chapter | cells | median lines | max lines | median definitions |')
    print('|---|---|---|---|---|')
    every = []
    for nb in sorted(NBS.glob('[0-9]*.ipynb')):
        cells = export_cells(nb)
        if not cells: continue
        lines, defs = [code_lines(c) for c in cells], [definitions(c) for c in cells]
        every += lines
        row = [nb.stem, len(cells), f'{statistics.median(lines):g}', max(lines), f'{statistics.median(defs):g}']
        print('| ' + ' | '.join(map(str, row)) + ' |')
    print(f'| **all** | {len(every)} | **{statistics.median(every):g}** | {max(every)} | |')
    print('\n## Longest functions\n')
    for n, name in longest_functions(): print(f'- {name}: {n} lines')
    chapter = chapter_of()
    graph = {py.stem: imports(py) for py in sorted(LIB.glob('*.py')) if not py.name.startswith('_')}
    print('\n## Import graph (module -> the minisweep modules it imports)\n')
    for m, deps in graph.items(): print(f'- {m} ({chapter.get(m, "?")}) -> {", ".join(sorted(deps)) or "nothing"}')
    later = [(m, d) for m, deps in graph.items() for d in deps if chapter.get(d, '') > chapter.get(m, '~')]
    cyc = cycles(graph)
    torch_core = 'torch' in top_packages(LIB / 'core.py')
    print('\nImports of a later chapter: ' + (', '.join(f'{m} -> {d}' for m, d in later) or 'none'))
    print('Cycles: ' + ('; '.join(' -> '.join(c) for c in cyc) or 'none'))
    print(f"The core imports torch: {'yes' if torch_core else 'no'}")
    return 1 if later or cyc or torch_core else 0


if __name__ == '__main__': sys.exit(main())
