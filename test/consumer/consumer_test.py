#!/usr/bin/env python3
"""Builds cowq as an outside project would and runs a program against it.

    consumer_test.py subproject   # cowq as a Meson subproject of a consumer
    consumer_test.py pkg-config   # cowq installed, consumer uses pkg-config

Run by meson test (suite 'consumer'), which sets COWQ_SOURCE_ROOT, CXX and
MESON; runs standalone too. Works in a fresh temporary directory, removed
afterwards unless COWQ_KEEP_TMP is set. Exit status: 0 passed, 1 failed,
77 skipped (only when a tool it needs is not installed).
"""

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE_ROOT = Path(os.environ.get('COWQ_SOURCE_ROOT', HERE.parent.parent)).resolve()
CONSUMER = HERE / 'subproject_consumer'
SKIP = 77

# Warnings the public headers must not trigger in a user's build.
STRICT = ['-Wall', '-Wextra', '-Wpedantic', '-Werror']


class Skip(Exception):
    pass


class Failed(Exception):
    pass


def log(msg):
    print(f'consumer_test: {msg}', flush=True)


def tool(env_var, name):
    """The command for a tool, from env_var if set, else from PATH."""
    value = os.environ.get(env_var)
    if value:
        cmd = shlex.split(value)
        if shutil.which(cmd[0]):
            return cmd
    path = shutil.which(name)
    if not path:
        raise Skip(f'{name} not found')
    return [path]


def run(cmd, **kw):
    log('$ ' + ' '.join(shlex.quote(str(c)) for c in cmd))
    r = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, **kw)
    print(r.stdout, end='', flush=True)
    if r.returncode != 0:
        raise Failed(f'{Path(str(cmd[0])).name} exited with {r.returncode}')
    return r.stdout


def clean_env():
    """The environment without what meson test adds for the parent build."""
    env = dict(os.environ)
    # The parent build dir in LD_LIBRARY_PATH would let a program load the
    # parent's libcowq.so instead of the one under test.
    env.pop('LD_LIBRARY_PATH', None)
    env.pop('MESON_TEST_ITERATION', None)
    return env


def copy_source_tree(dest):
    """This source tree without .git, build directories and downloaded
    subprojects (subprojects/*.wrap files are kept)."""
    def ignore(directory, names):
        d = Path(directory)
        skipped = set()
        for n in names:
            if d == SOURCE_ROOT and (n == '.git' or n.startswith('build')):
                skipped.add(n)
            elif d == SOURCE_ROOT / 'subprojects' and (d / n).is_dir():
                skipped.add(n)
            elif n == '__pycache__':
                skipped.add(n)
        return skipped
    shutil.copytree(SOURCE_ROOT, dest, ignore=ignore, symlinks=True)


def run_consumer(exe, env):
    out = run([exe], env=env, timeout=120)
    if 'cowq consumer: OK' not in out:
        raise Failed(f'{exe} did not report success')


def test_subproject(work):
    meson = tool('MESON', 'meson')
    tool('NINJA', 'ninja')
    env = clean_env()

    project = work / 'consumer'
    shutil.copytree(CONSUMER, project)
    copy_source_tree(project / 'subprojects' / 'cowq')

    build = project / 'build'
    # --force-fallback-for: use the subproject even if a cowq is installed.
    run(meson + ['setup', build, project, '--buildtype=debugoptimized',
                 '--force-fallback-for=cowq'], env=env)
    # The subproject must build only the library.
    targets = json.loads(subprocess.run(
        meson + ['introspect', '--targets', str(build)], env=env, check=True,
        stdout=subprocess.PIPE, text=True).stdout)
    extra = [t['name'] for t in targets if t.get('subproject') == 'cowq'
             and not t['type'].endswith('library')]
    if extra:
        raise Failed(f'cowq as a subproject builds more than its library: {extra}')
    if not any(t.get('subproject') == 'cowq' for t in targets):
        raise Failed('no target from the cowq subproject')
    run(meson + ['compile', '-C', build], env=env)
    run_consumer(build / 'consumer', env)


def test_pkg_config(work):
    meson = tool('MESON', 'meson')
    tool('NINJA', 'ninja')
    pkg_config = tool('PKG_CONFIG', 'pkg-config')
    cxx = tool('CXX', 'c++')
    env = clean_env()

    build = work / 'build'
    destdir = work / 'destdir'
    # A prefix nothing else lives under, so that nothing found outside
    # destdir can stand in for what was installed.
    prefix = '/opt/cowq-consumer-test'
    run(meson + ['setup', build, SOURCE_ROOT, '--buildtype=debugoptimized',
                 f'--prefix={prefix}', '--libdir=lib',
                 '-Ddefault_library=both', '-Dtests=disabled',
                 '-Dexamples=disabled', '-Dbenchmarks=disabled'], env=env)
    run(meson + ['compile', '-C', build], env=env)
    run(meson + ['install', '-C', build, '--no-rebuild',
                 f'--destdir={destdir}'], env=env)

    root = destdir / prefix.lstrip('/')
    libdir = root / 'lib'
    pcdir = libdir / 'pkgconfig'
    if not (pcdir / 'cowq.pc').is_file():
        raise Failed(f'no cowq.pc installed in {pcdir}')
    print((pcdir / 'cowq.pc').read_text(), flush=True)
    # Every public header is installed (a header missing from meson.build's
    # install list would break users who include it).
    public = sorted(p.name for p in (SOURCE_ROOT / 'include' / 'cowq').glob('*.hpp'))
    missing = [h for h in public if not (root / 'include' / 'cowq' / h).is_file()]
    if missing:
        raise Failed(f'public headers not installed: {missing}')

    # A static-only copy of the installation: there -lcowq can only be
    # libcowq.a, so its link proves Libs.private / Requires.private.
    static_destdir = work / 'destdir-static'
    shutil.copytree(destdir, static_destdir, symlinks=True)
    for so in (static_destdir / prefix.lstrip('/') / 'lib').glob('libcowq.so*'):
        so.unlink()

    for kind, sysroot, pc_args in (('shared', destdir, []),
                                   ('static', static_destdir, ['--static'])):
        pc_env = dict(env)
        pc_env['PKG_CONFIG_PATH'] = str(sysroot / prefix.lstrip('/') / 'lib' / 'pkgconfig')
        # Prepends the destdir to the -I and -L paths of cowq.pc (and, as
        # harmless, to those of the system packages it requires, which sit
        # in the default search paths anyway).
        pc_env['PKG_CONFIG_SYSROOT_DIR'] = str(sysroot)
        cflags = run(pkg_config + ['--cflags', 'cowq'], env=pc_env).split()
        libs = run(pkg_config + pc_args + ['--libs', 'cowq'], env=pc_env).split()
        exe = work / f'consumer-{kind}'
        run(cxx + STRICT + ['-O2'] + cflags +
            [CONSUMER / 'main.cpp', '-o', exe] + libs, env=env)

        run_env = dict(env)
        if kind == 'shared':
            run_env['LD_LIBRARY_PATH'] = str(libdir)
        ldd = run(['ldd', exe], env=run_env) if shutil.which('ldd') else ''
        cowq_lines = [l for l in ldd.splitlines() if 'libcowq' in l]
        if kind == 'shared' and ldd and not any(str(libdir) in l for l in cowq_lines):
            raise Failed(f'{exe.name} does not load libcowq.so from {libdir}')
        if kind == 'static' and cowq_lines:
            raise Failed(f'{exe.name} should not need libcowq.so')
        run_consumer(exe, run_env)


def main():
    if len(sys.argv) != 2 or sys.argv[1] not in ('subproject', 'pkg-config'):
        print(__doc__, file=sys.stderr)
        return 2
    kind = sys.argv[1]
    work = Path(tempfile.mkdtemp(prefix=f'cowq-consumer-{kind}-'))
    try:
        if kind == 'subproject':
            test_subproject(work)
        else:
            test_pkg_config(work)
    except Skip as e:
        log(f'SKIP: {e}')
        return SKIP
    except (Failed, subprocess.TimeoutExpired) as e:
        log(f'FAIL: {e}')
        return 1
    finally:
        if os.environ.get('COWQ_KEEP_TMP'):
            log(f'kept {work}')
        else:
            shutil.rmtree(work, ignore_errors=True)
    log(f'PASS: {kind}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
