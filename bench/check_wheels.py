#!/usr/bin/env python
"""Check a folder of wheels for an offline `pip install --no-index --no-deps`: one version of each package, and every
wheel's own requirements (for that Python, on Linux x86-64) met by another wheel of the folder or by what the target
already has: the device image's list (bench/device-image.txt, the default) or, with --here, this Python's packages.

    python bench/check_wheels.py .whl/py3.12 [--python 3.12] [--image bench/device-image.txt | --here]

Prints one line per problem; exit status 0 when there is none, 1 when there is one, 2 on bad input. A requirement met
by an image package whose version the list does not give is reported once as 'unverified', not as a problem."""
from __future__ import annotations
import argparse, re, sys, zipfile
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version


def wheel_requires(path: Path) -> list:
    "The Requires-Dist lines of a wheel's METADATA."
    with zipfile.ZipFile(path) as z:
        meta = next(n for n in z.namelist() if n.endswith('.dist-info/METADATA'))
        text = z.read(meta).decode('utf-8', 'replace')
    head = text.split('\n\n', 1)[0]
    return [l.split(':', 1)[1].strip() for l in head.splitlines() if l.startswith('Requires-Dist:')]


def read_image(path: Path) -> dict:
    "{canonical name: Version or None} of an image list (NAME or NAME==VERSION a line, # comments)."
    out = {}
    for line in path.read_text().splitlines():
        line = line.split('#', 1)[0].strip()
        if not line: continue
        name, _, ver = line.partition('==')
        out[canonicalize_name(name)] = Version(ver) if ver else None
    return out


def here_packages() -> dict:
    from importlib.metadata import distributions
    out = {}
    for d in distributions():
        try: out[canonicalize_name(d.metadata['Name'])] = Version(d.version)
        except Exception: pass
    return out


def check(folder: Path, pyver: str, have: dict, where: str) -> tuple:
    "(problems, notes) of the wheels in `folder`."
    wheels = sorted(folder.glob('*.whl'))
    problems, notes, ours = [], [], {}
    if not wheels: return [f'{folder}: no wheels'], notes
    for w in wheels:
        name, ver, _, _ = parse_wheel_filename(w.name)
        if name in ours: problems.append(f'two versions of {name}: {ours[name][0]} and {ver} (the install would stop)')
        ours[name] = (ver, w)
    env = default_environment()
    env.update(python_version=pyver, python_full_version=f'{pyver}.0', sys_platform='linux', platform_system='Linux',
               platform_machine='x86_64', os_name='posix', implementation_name='cpython',
               platform_python_implementation='CPython', extra='')
    unverified = set()
    for name, (ver, w) in ours.items():
        for line in wheel_requires(w):
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate(env): continue
            dep = canonicalize_name(req.name)
            if dep in ours:
                if not req.specifier.contains(ours[dep][0], prereleases=True):
                    problems.append(f'{name} {ver} needs {req} but the wheel is {dep} {ours[dep][0]}')
            elif dep in have:
                v = have[dep]
                if v is None:
                    if str(req.specifier): unverified.add(f'{dep}{req.specifier}')
                elif not req.specifier.contains(v, prereleases=True):
                    problems.append(f'{name} {ver} needs {req} but {where} has {dep} {v}: carry a wheel of {dep}')
            else: problems.append(f'{name} {ver} needs {req}, which neither the wheels nor {where} have: add it to '
                                  'bench/device-wheels.txt')
    if unverified: notes.append(f'unverified (in {where}, version not listed): ' + ', '.join(sorted(unverified)))
    return problems, notes


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('folder')
    p.add_argument('--python', default=None, help='the target Python, X.Y (default: from the folder name, pyX.Y)')
    p.add_argument('--image', default=str(Path(__file__).with_name('device-image.txt')))
    p.add_argument('--here', action='store_true', help="check against this Python's packages instead of the image")
    a = p.parse_args(argv)
    folder = Path(a.folder)
    m = re.search(r'py(\d\.\d+)$', folder.name)
    pyver = a.python or (m.group(1) if m else None)
    if not folder.is_dir() or not pyver:
        print(f'check_wheels: {folder} is not a folder of wheels named pyX.Y (or give --python)', file=sys.stderr)
        return 2
    if a.here: have, where = here_packages(), f'this Python ({sys.executable})'
    else: have, where = read_image(Path(a.image)), 'the device image'
    problems, notes = check(folder, pyver, have, where)
    for n in notes: print(f'check_wheels: {n}')
    for q in problems: print(f'check_wheels: {q}', file=sys.stderr)
    n = len(list(folder.glob('*.whl')))
    print(f"check_wheels: {folder}: {n} wheels, {'no problems' if not problems else f'{len(problems)} problems'}")
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
