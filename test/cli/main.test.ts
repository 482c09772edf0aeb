/**
 * The command line's exit codes and errors (src/cli/main.ts) as users meet them, through the
 * built bin: 2 and one line for a usage error, 1 and one line for a runtime error (a stack only
 * with --verbose), what a malformed or unreadable --file says, 0 for --help and --version.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildImage, writeImage } from '../helpers/image.js';
import { runBin } from '../helpers/processes.js';

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
    expect(run('read', '--file', '/proc/self/mem').stderr).toBe('kvm-stats-otel: invalid KVM stats image: file /proc/self/mem cannot be read as a stats image: pread failed with EIO\n');
    // The agent opens its images the same way: it exits with the same line instead of hanging.
    const agent = run('agent', '--file', fifo, '--console', '--log-level', 'error');
    expect(agent.code).not.toBe(0);
    expect(agent.stderr).toContain(`${fifo} is a FIFO, not a saved stats image`);
    rmSync(dir, { recursive: true });
  });

  it('exits 0 for --help and --version', () => {
    expect(run('--help').code).toBe(0);
    expect(run('read', '--help').stdout).toContain('--pid <pid>');
    expect(run('--version').stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });
});
