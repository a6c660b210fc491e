#!/usr/bin/env python3
"""Turns the C++ samples of the documentation into files the build compiles.

Every block fenced as ```cpp in a listed Markdown page is a complete
translation unit. It is written to a .cpp file of its own, named after the
page and the block's position (concepts.md's third block is concepts_3.cpp),
starting with a #line directive that points back at the page, so that a
compiler error names the page and line of the Markdown source. A block that
defines main() becomes a program; the others are compiled into a library.
A block fenced as ```cpp fragment is shown, not compiled: keep those rare.

    extract_samples.py list --docs-dir DIR PAGE=KIND...
        Checks the pages (paths relative to DIR) and prints one line per
        sample, "PAGE NAME KIND" (KIND is 'main' or 'object'), for
        docs/meson.build. A page's KIND is 'samples' (it must have at least
        one) or 'optional'. Fails if a page is missing, if a 'samples' page
        has none, if a fence is malformed, or if a *.md file in DIR is not
        listed.
    extract_samples.py write --outdir DIR PAGE NAME...
        Writes PAGE's samples to DIR/NAME.cpp; the names must be the ones
        `list` gave (if not, the page changed since meson last configured).

Standard library only: it runs wherever meson runs.
"""

import argparse
import re
import sys
from pathlib import Path

# An opening fence: three or more backticks or tildes, then an info string.
# Any indentation is accepted (a fence inside a list item is still a sample).
OPEN = re.compile(r'^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>.*?)[ \t]*$')
# A definition of main at the start of a line, as samples write it.
MAIN = re.compile(r'^[ \t]*int[ \t]+main[ \t]*\(', re.MULTILINE)

COMPILED = 'cpp'
SHOWN_ONLY = 'cpp fragment'


class DocError(Exception):
    pass


class Sample:
    def __init__(self, line, code):
        self.line = line  # 1-based line of the page where the code starts
        self.code = code

    @property
    def kind(self):
        return 'main' if MAIN.search(self.code) else 'object'


def stem_of(page):
    return re.sub(r'[^0-9a-z]+', '_', Path(page).stem.lower()).strip('_')


def parse(page):
    """The page's compiled samples, in order."""
    try:
        lines = Path(page).read_text(encoding='utf-8').splitlines()
    except OSError as e:
        raise DocError(f'{page}: cannot read: {e.strerror}') from e
    samples = []
    i = 0
    while i < len(lines):
        m = OPEN.match(lines[i])
        if not m:
            i += 1
            continue
        fence, indent, info = m['fence'], m['indent'], ' '.join(m['info'].split())
        start = i + 1
        close = re.compile(r'^[ \t]*' + re.escape(fence[0]) + '{' + str(len(fence)) + r',}[ \t]*$')
        j = start
        while j < len(lines) and not close.match(lines[j]):
            j += 1
        if j == len(lines):
            raise DocError(f'{page}:{i + 1}: code block is never closed')
        if re.match(r'(cpp|c\+\+|cxx|cc|hpp)(?!\w)', info, re.IGNORECASE):
            if info == COMPILED:
                body = [l[len(indent):] if l.startswith(indent) else l.lstrip()
                        for l in lines[start:j]]
                code = '\n'.join(body).rstrip()
                if not code.strip():
                    raise DocError(f'{page}:{i + 1}: empty ```cpp block')
                samples.append(Sample(start + 1, code + '\n'))
            elif info != SHOWN_ONLY:
                raise DocError(
                    f'{page}:{i + 1}: fence "{fence}{info}": write ```{COMPILED} (compiled) '
                    f'or ```{SHOWN_ONLY} (shown only)')
        i = j + 1
    return samples


def names_of(page, samples):
    stem = stem_of(page)
    return [f'{stem}_{n}' for n in range(1, len(samples) + 1)]


def cmd_list(args):
    docs_dir = Path(args.docs_dir).resolve()
    listed = {}
    for entry in args.pages:
        page, sep, kind = entry.rpartition('=')
        if not sep or kind not in ('samples', 'optional'):
            raise DocError(f'bad page entry "{entry}": want PAGE=samples or PAGE=optional')
        listed[(docs_dir / page).resolve()] = (page, kind)
    unlisted = sorted(p.name for p in docs_dir.glob('*.md') if p.resolve() not in listed)
    if unlisted:
        raise DocError(
            f'{", ".join(unlisted)} in {docs_dir} not listed in docs/meson.build: '
            'add a line for each (its samples are compiled with the build)')
    stems = {}
    out = []
    for path, (page, kind) in listed.items():
        samples = parse(path)
        if kind == 'samples' and not samples:
            raise DocError(
                f'{page}: listed as having samples but has no ```{COMPILED} block; '
                "mark it 'optional' in docs/meson.build if it should have none")
        stem = stem_of(page)
        if stem in stems:
            raise DocError(f'{page} and {stems[stem]} would give samples the same names')
        stems[stem] = page
        for name, s in zip(names_of(page, samples), samples):
            out.append(f'{page} {name} {s.kind}')
    print('\n'.join(out))


def cmd_write(args):
    samples = parse(args.page)
    names = names_of(args.page, samples)
    if names != args.names:
        raise DocError(
            f'{args.page} now has {len(names)} samples, the build expects '
            f'{len(args.names)}: run meson setup --reconfigure')
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    # The page's path as the compiler was given it, so errors read like any other.
    where = args.page.replace('\\', '\\\\').replace('"', '\\"')
    for name, s in zip(names, samples):
        text = (f'// Generated from {Path(args.page).name} by docs/extract_samples.py: '
                f'edit the page, not this file.\n'
                f'#line {s.line} "{where}"\n{s.code}')
        (outdir / f'{name}.cpp').write_text(text, encoding='utf-8')


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    sub = ap.add_subparsers(dest='cmd', required=True)
    ls = sub.add_parser('list')
    ls.add_argument('--docs-dir', required=True)
    ls.add_argument('pages', nargs='+')
    wr = sub.add_parser('write')
    wr.add_argument('--outdir', required=True)
    wr.add_argument('page')
    wr.add_argument('names', nargs='*')
    args = ap.parse_args()
    try:
        cmd_list(args) if args.cmd == 'list' else cmd_write(args)
    except DocError as e:
        print(f'extract_samples.py: error: {e}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
