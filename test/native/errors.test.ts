/**
 * The errors a user meets name the call, the errno and what to do (src/native/errors.ts and the
 * calls that raise them), on real KVM: /dev/kvm, a copied VM fd, an unprivileged user.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { expect, it } from 'vitest';
import { Kvm, VmFd } from '../../src/native/kvm-fds.js';
import { NativeError } from '../../src/native/errors.js';
import { closeFd, pidfdGetfd, pidfdOpen } from '../../src/native/libc.js';
import { errorText } from '../../src/cli/hints.js';
import { fdLinks } from '../../src/sources/proc.js';
import { StatsFile } from '../../src/stats/stats-file.js';
import { describeKvm } from '../helpers/kvm.js';
import { AS_NOBODY, startVmm, unprivilegedCopy } from '../helpers/processes.js';

describeKvm('errors name the call, the errno and what to do (real KVM)', () => {
  it('says how to get at /dev/kvm, copy an fd, or read a path', () => {
    expect(() => Kvm.open('/nonexistent/kvm')).toThrow('open /nonexistent/kvm failed with ENOENT: check the path');
    expect(() => StatsFile.openImage('/nonexistent.kvmstats')).toThrow('open /nonexistent.kvmstats failed with ENOENT: check the path');
    let free = 4_000_000;
    while (readdirSync('/proc').includes(String(free))) free++;
    expect(() => pidfdOpen(free)).toThrow('pidfd_open failed with ESRCH: no such process: check the pid, it may have exited');
  });

  it('refuses KVM_GET_STATS_FD on a VM fd copied from its creator, with EIO', async () => {
    const vmm = await startVmm(['--no-stats']);
    try {
      const vmLink = fdLinks(vmm.pid).find((l) => l.target === 'anon_inode:kvm-vm')!;
      const pidfd = pidfdOpen(vmm.pid);
      const copy = new VmFd(pidfdGetfd(pidfd, vmLink.fd));
      closeFd(pidfd);
      try {
        copy.statsFd();
        expect.unreachable('KVM_GET_STATS_FD worked on a copied VM fd');
      } catch (error) {
        expect(error).toBeInstanceOf(NativeError);
        expect((error as NativeError).code).toBe('EIO');
        expect((error as Error).message).toBe(
          'KVM_GET_STATS_FD failed with EIO: only the process that created the VM can do this; copy the stats fds the VMM holds instead',
        );
        // The command line says which flag copies them.
        expect(errorText(error as Error)).toBe(`${(error as Error).message} (read --pid)`);
      } finally {
        copy.close();
      }
    } finally {
      await vmm.stop();
    }
  });

  it('tells an unprivileged user to join the kvm group and that copying fds needs ptrace rights', () => {
    const fixture = unprivilegedCopy('unprivileged.mjs');
    const [setpriv, ...asNobody] = AS_NOBODY;
    const result = spawnSync(setpriv!, [...asNobody, process.execPath, fixture, '1', '0'], { cwd: '/', encoding: 'utf8' });
    expect(result.status, result.stderr).toBe(0);
    const messages = JSON.parse(result.stdout) as Record<string, string>;
    expect(messages.openKvm).toBe('open /dev/kvm failed with EACCES: run as root or join the kvm group');
    expect(messages.pidfdGetfd).toMatch(/^pidfd_getfd failed with EPERM: copying another process's fd needs the same uid or CAP_SYS_PTRACE/);
  });
});
