/**
 * `helper wrapper` and its script (src/setup/preload-wrapper.ts): a libvirt `<emulator>` that
 * execs the real VMM with the preload helper loaded, keeping its arguments and an earlier
 * preload. (On a real libvirt: test/system/libvirt.test.ts.)
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { preloadWrapperScript } from '../../src/setup/preload-wrapper.js';
import { runBin } from '../helpers/processes.js';

describe('helper wrapper', () => {
  it('writes a script that execs the emulator with the helper preloaded, keeping the arguments and an earlier preload', async () => {
    const dir = mkdtempSync(join(tmpdir(), "kvm-wrapper-it's-"));
    try {
      const emulator = join(dir, 'fake qemu');
      writeFileSync(emulator, '#!/bin/sh\nprintf "%s\\n" "$LD_PRELOAD" "$KVM_STATS_OTEL_SOCKET" "$@"\n', { mode: 0o755 });
      const wrapper = join(dir, 'wrapper');
      const helperDir = join(dir, 'helper');
      const written = runBin(['helper', 'wrapper', wrapper, '--dir', helperDir, '--emulator', emulator, '--socket', `${dir}/agent.sock`]);
      expect(written.stdout, written.stderr).toBe(`${wrapper}\n`);
      expect(statSync(wrapper).mode & 0o777).toBe(0o755);
      const preload = join(helperDir, 'libkvm-stats-preload.so');
      expect(existsSync(preload)).toBe(true);
      const out = spawnSync(wrapper, ['-name', "guest=a b'c", ''], { encoding: 'utf8', env: { PATH: '/usr/bin:/bin', LD_PRELOAD: '' } });
      expect(out.stdout).toBe(`${preload}\n${dir}/agent.sock\n-name\nguest=a b'c\n\n`);
      // A preload already set (another tool's) stays, after the helper; the helper loads for real.
      const earlier = spawnSync(wrapper, [], { encoding: 'utf8', env: { PATH: '/usr/bin:/bin', LD_PRELOAD: preload } });
      expect(earlier.stdout.split('\n')[0]).toBe(`${preload} ${preload}`);
      expect(earlier.stderr).toBe('');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    expect(() => preloadWrapperScript({ preload: 'lib.so', emulator: '/usr/bin/qemu-system-x86_64' })).toThrow('the preload helper path lib.so is not absolute');
    expect(() => preloadWrapperScript({ preload: '/lib.so', emulator: '/q', env: { 'A-B': 'x' } })).toThrow('"A-B" is not an environment variable name');
  });
});
