/**
 * Why there is no KVM (sources/kvm-check.ts): each cause from its facts, and on this host the
 * cause its own /proc shows; DemoVm.start() without a usable device throws it.
 */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { NativeError } from '../../src/native/errors.js';
import { DemoVm } from '../../src/sources/demo.js';
import { type KvmFacts, KvmUnavailableError, diagnoseKvm, kvmAvailability } from '../../src/sources/kvm-check.js';

const FACTS: KvmFacts = { path: '/dev/kvm', code: 'ENOENT', arch: 'x64', cpuFlags: new Set(['fpu', 'sse2']), kvmMiscDevice: false, uid: 1000 };

describe('diagnoseKvm', () => {
  it('a VM without nested virtualization: hypervisor, no vmx or svm', () => {
    expect(diagnoseKvm({ ...FACTS, cpuFlags: new Set(['fpu', 'hypervisor']) })).toEqual({
      available: false,
      cause: 'no-virtualization',
      nested: true,
      message: '/dev/kvm is missing: this machine is itself a VM whose CPU has no vmx or svm (no nested virtualization); KVM needs a host, or a VM with nested virtualization',
    });
  });

  it('a machine with virtualization off: no vmx, svm or hypervisor', () => {
    expect(diagnoseKvm(FACTS)).toMatchObject({ cause: 'no-virtualization', nested: false, message: expect.stringMatching(/the CPU has no vmx or svm .*enable VT-x or AMD-V in the firmware$/) });
  });

  it('no module loaded: the one the CPU needs', () => {
    expect(diagnoseKvm({ ...FACTS, cpuFlags: new Set(['vmx']) })).toMatchObject({ cause: 'no-module', message: '/dev/kvm is missing: no KVM module is loaded, though the CPU has vmx; load it (modprobe kvm_intel)' });
    expect(diagnoseKvm({ ...FACTS, cpuFlags: new Set(['svm', 'hypervisor']) })).toMatchObject({ cause: 'no-module', message: expect.stringContaining('(modprobe kvm_amd)') });
    // No x86 flags to go by (arm64): KVM not loaded, or a kernel not booted at EL2.
    expect(diagnoseKvm({ ...FACTS, arch: 'arm64', cpuFlags: undefined })).toMatchObject({ cause: 'no-module', message: expect.stringContaining('boot the kernel at EL2') });
  });

  it('KVM loaded, no device node', () => {
    expect(diagnoseKvm({ ...FACTS, cpuFlags: new Set(['svm']), kvmMiscDevice: true })).toMatchObject({ cause: 'no-device-node', message: expect.stringContaining('mknod /dev/kvm c 10 232') });
  });

  it('no permission: the mode, owner and group, and the group to join', () => {
    const facts = { ...FACTS, code: 'EACCES', device: { mode: 0o20660, uid: 0, gid: 993, groupName: 'kvm' } };
    expect(diagnoseKvm(facts)).toEqual({
      available: false,
      cause: 'no-permission',
      message: 'no permission to open /dev/kvm (mode 0660, owner uid 0, group kvm) as uid 1000 (EACCES): run as root or as a member of group kvm',
    });
  });

  it('any other failure is said as it came', () => {
    expect(diagnoseKvm({ ...FACTS, code: 'EIO' }, 'open /dev/kvm failed with EIO')).toEqual({ available: false, cause: 'other', message: 'open /dev/kvm failed with EIO' });
  });
});

/** What this host's own /proc says, read here apart from the code under test. */
function hostCause(): string {
  const flags = /^flags\s*:(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'latin1'))?.[1]?.trim().split(/\s+/) ?? [];
  if (process.arch === 'x64' && !flags.includes('vmx') && !flags.includes('svm')) return 'no-virtualization';
  return /^\s*\d+ kvm$/m.test(readFileSync('/proc/misc', 'latin1')) ? 'no-device-node' : 'no-module';
}

describe('this host', () => {
  it('kvmAvailability: a device this process opens, or the cause its /proc shows', () => {
    const kvm = kvmAvailability();
    if (existsSync('/dev/kvm') && process.getuid?.() === 0) {
      expect(kvm).toEqual({ available: true });
    } else if (!existsSync('/dev/kvm')) {
      expect(kvm).toMatchObject({ available: false, cause: hostCause() });
    } else {
      expect(kvm.available || kvm.cause === 'no-permission').toBe(true);
    }
  });

  it('DemoVm.start without a usable device: a KvmUnavailableError saying why, its failed call as cause, nothing left open', async () => {
    const before = readdirSync('/proc/self/fd').length;
    const error = (await DemoVm.start({ kvmPath: '/nonexistent/kvm' }).catch((e: unknown) => e)) as KvmUnavailableError;
    expect(error).toBeInstanceOf(KvmUnavailableError);
    expect(error.reason).toBe(hostCause());
    expect(error.path).toBe('/nonexistent/kvm');
    expect(error.message).toMatch(/^\/nonexistent\/kvm is missing/);
    expect(error.cause).toBeInstanceOf(NativeError);
    expect((error.cause as NativeError).code).toBe('ENOENT');
    expect(readdirSync('/proc/self/fd').length).toBe(before);
  });
});
