#!/usr/bin/env python3
"""End to end: examples/file_copy copies files of awkward sizes byte for
byte (empty, smaller than a block, not a multiple of the block size, many
blocks in flight), keeps the source's permission bits, reports its
throughput, and fails cleanly (exit 1, a message, no partial file, the
source untouched) on a missing source, an unwritable destination, a
directory as source, and a copy of a file onto itself."""
import hashlib
import os
import stat
import subprocess
import sys
import tempfile

TIMEOUT = 120  # seconds per run, generous for sanitizer builds


def digest(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def run(exe, *args):
    return subprocess.run([exe, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=TIMEOUT)


def main():
    exe = sys.argv[1]
    failures = []

    def check(cond, what):
        if not cond:
            failures.append(what)
            print('FAIL:', what, file=sys.stderr)

    with tempfile.TemporaryDirectory() as d:
        cases = [
            ('empty', 0, []),
            ('small', 1000, []),
            ('odd', 5 * 131072 + 12345, []),
            ('deep', 24 * 1024 * 1024 + 7, ['--depth', '64', '--block-size', '65536']),
            ('shallow', 3 * 1024 * 1024 + 1, ['--depth', '1', '--block-size', '4096', '--no-fsync']),
        ]
        for name, size, extra in cases:
            src = os.path.join(d, name + '.src')
            dst = os.path.join(d, name + '.dst')
            with open(src, 'wb') as f:
                f.write(os.urandom(size))
            os.chmod(src, 0o640)
            r = run(exe, src, dst, *extra)
            check(r.returncode == 0, f'{name}: exit {r.returncode}: {r.stderr.strip()}')
            if r.returncode == 0:
                check(os.path.getsize(dst) == size, f'{name}: size {os.path.getsize(dst)} != {size}')
                check(digest(dst) == digest(src), f'{name}: contents differ')
                check(stat.S_IMODE(os.stat(dst).st_mode) == 0o640, f'{name}: mode not kept')
                check(f'copied {size} bytes' in r.stdout and 'MiB/s' in r.stdout,
                      f'{name}: no throughput line: {r.stdout!r}')

        # Copying over an existing, larger destination truncates it.
        big = os.path.join(d, 'deep.dst')
        r = run(exe, os.path.join(d, 'small.src'), big)
        check(r.returncode == 0 and os.path.getsize(big) == 1000, 'overwrite: not truncated')

        src = os.path.join(d, 'odd.src')
        before = digest(src)
        bad = [
            ('missing source', [os.path.join(d, 'nope'), os.path.join(d, 'x1')], 'x1'),
            ('unwritable destination', [src, os.path.join(d, 'no', 'such', 'dir')], None),
            ('directory source', [d, os.path.join(d, 'x2')], 'x2'),
            ('same file', [src, src], None),
            ('same file by another name', [src, os.path.join(d, '.', 'odd.src')], None),
            ('bad depth', ['--depth', '0', src, os.path.join(d, 'x3')], 'x3'),
            ('no arguments', [], None),
        ]
        for name, args, leftover in bad:
            r = run(exe, *args)
            check(r.returncode != 0, f'{name}: exit 0')
            check(r.stderr.strip() != '', f'{name}: no message')
            check('Traceback' not in r.stderr and 'terminate' not in r.stderr,
                  f'{name}: crashed: {r.stderr}')
            if leftover:
                check(not os.path.exists(os.path.join(d, leftover)), f'{name}: left a file')
        check(digest(src) == before, 'the source changed')

    if failures:
        print(f'{len(failures)} checks failed', file=sys.stderr)
        return 1
    print('file_copy e2e: all checks passed')
    return 0


if __name__ == '__main__':
    sys.exit(main())
