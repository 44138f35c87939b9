"""The house's weights, measured: words per markdown cell, prose per library line, lines over 120 characters, README
length. Prints the figures, and the problems of the files named as arguments (default: the first 40); exits 1 when a
limit is broken (`make test` runs it)."""
import json, re, statistics, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_CELL_WORDS, MAX_MEDIAN_WORDS, MAX_PROSE_PER_LINE, MAX_LINE, MAX_README = 200, 40, 3.0, 120, 150


def words(text: str) -> int:
    return len(re.findall(r'\S+', text))


def cells(kind: str):
    for nb in sorted((ROOT / 'nbs').glob('*.ipynb')):
        for i, c in enumerate(json.loads(nb.read_text())['cells']):
            if c['cell_type'] == kind: yield nb.name, i, ''.join(c['source'])


# Lines nbdev writes by itself, at widths of its own (its index at 140, `__all__` at 120 after the name): no notebook
# can shorten them, so they are the only lines not counted. Everything minisweep's own notebooks write is.
def generated(f: Path, line: str) -> bool: return f.name == '_modidx.py' or line.startswith('__all__ = [')


def long_lines() -> list:
    "Every line over the limit in the code of the library, tests, bench and tools, and of the notebooks' code cells."
    found = []
    for folder in ('minisweep', 'tests', 'bench', 'tools'):
        for f in sorted(p for p in (ROOT / folder).rglob('*') if p.suffix in ('.py', '.sh')):
            found += [f'{f.relative_to(ROOT)}:{n}' for n, l in enumerate(f.read_text().splitlines(), 1)
                      if len(l) > MAX_LINE and not generated(f, l)]
    for name, i, src in cells('code'):
        found += [f'nbs/{name} cell {i}' for l in src.splitlines() if len(l) > MAX_LINE]
    return found


def main() -> int:
    md = [(name, i, words(src)) for name, i, src in cells('markdown')]
    counts = sorted(w for *_, w in md)
    lib = sum(1 for f in (ROOT / 'minisweep').glob('*.py') if f.name != '_modidx.py'   # nbdev's index: not library
              for l in f.read_text().splitlines() if l.strip() and not l.lstrip().startswith('#'))
    prose_per_line = sum(counts) / lib
    over = [f'nbs/{name} cell {i}: {w} words' for name, i, w in md if w > MAX_CELL_WORDS]
    lines, readme = long_lines(), len((ROOT / 'README.md').read_text().splitlines())
    median, p90 = statistics.median(counts), counts[int(0.9 * (len(counts) - 1))]
    print(f'markdown cells: {len(counts)}, words per cell median {median:g} / p90 {p90} / max {counts[-1]} '
          f'(limits: median {MAX_MEDIAN_WORDS}, max {MAX_CELL_WORDS})')
    print(f'prose per library line: {prose_per_line:.2f} words ({sum(counts):,} words, {lib:,} lines; limit '
          f'{MAX_PROSE_PER_LINE:g})')
    print(f'lines over {MAX_LINE} characters: {len(lines)}; README: {readme} lines (limit {MAX_README})')
    problems = over + [f'{l}: over {MAX_LINE} characters' for l in lines]
    if median > MAX_MEDIAN_WORDS: problems.append(f'median words per markdown cell {median:g} > {MAX_MEDIAN_WORDS}')
    if prose_per_line > MAX_PROSE_PER_LINE:
        problems.append(f'prose per library line {prose_per_line:.2f} > {MAX_PROSE_PER_LINE:g}')
    if readme > MAX_README: problems.append(f'README.md has {readme} lines > {MAX_README}')
    shown = [p for p in problems if any(a in p for a in sys.argv[1:])] if sys.argv[1:] else problems[:40]
    for p in shown: print('  ' + p, file=sys.stderr)
    if len(problems) > len(shown):
        print(f'  ... and {len(problems) - len(shown)} more (name files to see theirs)', file=sys.stderr)
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
