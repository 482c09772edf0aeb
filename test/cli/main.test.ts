/**
 * The command line's exit codes and errors (src/cli/main.ts) as users meet them, through the
 * built bin: 2 and one line for a usage error, 1 and one line for a runtime error (a stack only
 * with --verbose), what a malformed or unreadable --file says, 0 for --help and --version.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildImage, writeImage } from '../helpers/image.js';
import { BIN, ROOT, runBin } from '../helpers/processes.js';

const run = (...args: string[]) => runBin(args);

describe('exit codes and errors', () => {
  it('exits 2 with one line for a usage error', () => {
    for (const args of [['read'], ['read', '--vcpus', '0', '--demo'], ['read', '--bogus'], ['read', '--units', 'metric', '--demo'], ['frobnicate']]) {
      const result = run(...args);
      expect(result.code, args.join(' ')).toBe(2);
      expect(result.stderr.trim().split('\n'), args.join(' ')).toHaveLength(1);
      expect(result.stderr).toMatch(/^kvm-stats-otel: /);
    }
  });

  it('exits 1 with one line for a runtime error, and a stack only with --verbose', () => {
    const result = run('read', '--file', '/nonexistent.kvmstats');
    expect(result.code).toBe(1);
    expect(result.stderr).toBe('kvm-stats-otel: open /nonexistent.kvmstats failed with ENOENT: check the path\n');
    const verbose = run('read', '--file', '/nonexistent.kvmstats', '--verbose');
    expect(verbose.code).toBe(1);
    expect(verbose.stderr).toMatch(/\n\s+at /);
  });

  it('ends quietly with 0 when the reader of its output goes away (agent --console | head -1)', () => {
    // bash's PIPESTATUS gives the agent's own exit status, not head's.
    const script = `"${process.execPath}" ${BIN} agent --demo 1 --console --interval 200 --log-level error | head -1 >/dev/null; echo "\${PIPESTATUS[0]}"`;
    const result = spawnSync('bash', ['-c', script], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
    expect(result.stdout.trim()).toBe('0');
    expect(result.stderr).toBe('');
  });

  it('says which field of a malformed image is wrong', () => {
    const bad = writeImage(buildImage({ descs: [{ name: 'a', offset: 4 }] }));
    const result = run('read', '--file', bad);
    expect(result.code).toBe(1);
    expect(result.stderr).toBe('kvm-stats-otel: invalid KVM stats image: descriptor[0] (a).offset is 4, not 8-byte aligned\n');
  });

  it('refuses what is not a regular file at once, saying what it is: a FIFO (no writer), a directory, /proc/self/mem', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kvm-stats-fifo-'));
    const fifo = join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    // Without O_NONBLOCK, open() of a FIFO waits for a writer forever: spawnSync's timeout would end it.
    const started = Date.now();
    const onFifo = run('read', '--file', fifo);
    expect(Date.now() - started).toBeLessThan(30_000);
    expect(onFifo.code).toBe(1);
    expect(onFifo.stderr).toBe(`kvm-stats-otel: invalid KVM stats image: file ${fifo} is a FIFO, not a saved stats image (a regular file)\n`);
    expect(run('read', '--file', dir).stderr).toBe(`kvm-stats-otel: invalid KVM stats image: file ${dir} is a directory, not a saved stats image (a regular file)\n`);
    expect(run('read', '--file', '/proc/self/mem').stderr).toBe(
      "kvm-stats-otel: invalid KVM stats image: file /proc/self/mem is a file of /proc (procfs), not a saved stats image (a regular file): the kernel's own files are never read as input, as reading some of them has effects (/proc/kmsg takes the kernel's log lines)\n",
    );
    // The agent opens its images the same way: it exits with the same line instead of hanging.
    const agent = run('agent', '--file', fifo, '--console', '--log-level', 'error');
    expect(agent.code).not.toBe(0);
    expect(agent.stderr).toContain(`${fifo} is a FIFO, not a saved stats image`);
    rmSync(dir, { recursive: true });
  });

  it('refuses a character device before opening it, and a file of /proc before reading a byte of it, as an image or a recording (strace)', () => {
    const trace = join(mkdtempSync(join(tmpdir(), 'kvm-stats-strace-')), 'trace');
    for (const [path, kind] of [
      ['/proc/kmsg', 'a file of /proc (procfs)'],
      ['/dev/zero', 'a character device'],
    ] as const) {
      for (const args of [['read', '--file', path], ['agent', '--file', path, '--console', '--log-level', 'error']]) {
        // -y names each fd's file, so a read of this one shows as read(N</proc/kmsg>, ...).
        const result = spawnSync('strace', ['-f', '-qq', '-y', '-e', 'trace=openat,read,pread64', '-o', trace, process.execPath, BIN, ...args], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
        const what = `${args.join(' ')}`;
        expect(result.status, what).toBe(1);
        expect(result.stderr, what).toContain(`${path} is ${kind}, not a saved stats image (a regular file)`);
        const calls = readFileSync(trace, 'utf8');
        expect(calls, what).not.toMatch(new RegExp(`(read|pread64)\\(\\d+<${path}>`));
        if (kind === 'a character device') expect(calls, what).not.toContain(`"${path}"`);
      }
    }
  });

  it('exits 0 for --help and --version', () => {
    expect(run('--help').code).toBe(0);
    expect(run('read', '--help').stdout).toContain('--pid <pid>');
    expect(run('--version').stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });
});
