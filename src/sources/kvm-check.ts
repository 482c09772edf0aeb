/**
 * Whether this host can make VMs (/dev/kvm usable by this process), and when it cannot, why,
 * in one line that says what failed and what is needed: no KVM module, no vmx/svm because the
 * machine is itself a VM without nested virtualization (or virtualization is off), no device
 * node, or no permission. The demo VM throws it (KvmUnavailableError); the CLI decides what to
 * do about it (replay a recording) and which flag helps.
 */
import { readFileSync, statSync } from 'node:fs';
import { Kvm, DEFAULT_KVM_PATH } from '../native/kvm-fds.js';
import { NativeError } from '../native/errors.js';

/**
 * - `no-virtualization`: the CPU offers no vmx or svm. `nested` says the machine is itself a
 *   VM (cpuinfo's `hypervisor` flag): its host gives it no nested virtualization.
 * - `no-module`: the CPU has vmx or svm, but no KVM module is loaded (no kvm misc device).
 * - `no-device-node`: KVM is loaded (misc device 232) but the device file is missing.
 * - `no-permission`: the device is there, but this process may not open it.
 * - `other`: opening it failed otherwise (the NativeError says how).
 */
export type KvmUnavailableCause = 'no-virtualization' | 'no-module' | 'no-device-node' | 'no-permission' | 'other';

export type KvmAvailability =
  | { readonly available: true }
  | { readonly available: false; readonly cause: KvmUnavailableCause; readonly nested?: boolean; readonly message: string };

/** The device cannot be opened; the message says why and what is needed, `reason` which case it
 * is, and `cause` the failed call. DemoVm.start() throws it. */
export class KvmUnavailableError extends Error {
  readonly reason: KvmUnavailableCause;
  /** The device file: /dev/kvm unless another was asked for. */
  readonly path: string;

  constructor(reason: KvmUnavailableCause, message: string, path: string = DEFAULT_KVM_PATH, options?: ErrorOptions) {
    super(message, options);
    this.name = 'KvmUnavailableError';
    this.reason = reason;
    this.path = path;
  }
}

/** What the diagnosis looks at, read from the host (hostFacts) or given by a test. */
export interface KvmFacts {
  readonly path: string;
  /** The errno name of opening the device. */
  readonly code: string;
  /** process.arch: the CPU flags are an x86 matter. */
  readonly arch: string;
  /** cpuinfo's flags of the first CPU; undefined where there is no such line (not x86). */
  readonly cpuFlags?: ReadonlySet<string> | undefined;
  /** Whether /proc/misc lists the kvm device. */
  readonly kvmMiscDevice: boolean;
  /** The device file's mode, owner and group, when it exists. */
  readonly device?: { readonly mode: number; readonly uid: number; readonly gid: number; readonly groupName?: string | undefined } | undefined;
  /** Who this process is. */
  readonly uid: number;
}

const MISSING = new Set(['ENOENT', 'ENXIO', 'ENODEV']);
const DENIED = new Set(['EACCES', 'EPERM']);

/** The cause and its one line, from the facts. */
export function diagnoseKvm(facts: KvmFacts, failure?: string): KvmAvailability & { available: false } {
  const { path, code } = facts;
  if (DENIED.has(code)) {
    const device = facts.device;
    const how = device
      ? ` (mode ${(device.mode & 0o777).toString(8).padStart(4, '0')}, owner uid ${device.uid}, group ${device.groupName ?? device.gid})`
      : '';
    const group = device?.groupName ?? (device ? `gid ${device.gid}` : 'kvm');
    return {
      available: false,
      cause: 'no-permission',
      message: `no permission to open ${path}${how} as uid ${facts.uid} (${code}): run as root or as a member of group ${group}`,
    };
  }
  if (!MISSING.has(code)) {
    return { available: false, cause: 'other', message: failure ?? `opening ${path} failed with ${code}` };
  }
  const flags = facts.cpuFlags;
  const x86 = facts.arch === 'x64' || facts.arch === 'ia32';
  if (x86 && flags !== undefined && !flags.has('vmx') && !flags.has('svm')) {
    const nested = flags.has('hypervisor');
    return {
      available: false,
      cause: 'no-virtualization',
      nested,
      message: nested
        ? `${path} is missing: this machine is itself a VM whose CPU has no vmx or svm (no nested virtualization); KVM needs a host, or a VM with nested virtualization`
        : `${path} is missing: the CPU has no vmx or svm (hardware virtualization is off in the firmware, or absent); enable VT-x or AMD-V in the firmware`,
    };
  }
  if (!facts.kvmMiscDevice) {
    const module = flags?.has('vmx') ? 'kvm_intel' : flags?.has('svm') ? 'kvm_amd' : undefined;
    return {
      available: false,
      cause: 'no-module',
      message: module
        ? `${path} is missing: no KVM module is loaded, though the CPU has ${module === 'kvm_intel' ? 'vmx' : 'svm'}; load it (modprobe ${module})`
        : `${path} is missing: this kernel has no KVM loaded; load its module (modprobe kvm), or on arm64 boot the kernel at EL2`,
    };
  }
  return {
    available: false,
    cause: 'no-device-node',
    message: `${path} is missing although KVM is loaded (misc device kvm, 10:232): create it (mknod ${path} c 10 232, mode 0660 group kvm) or let udev make it`,
  };
}

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, 'latin1');
  } catch {
    return undefined;
  }
}

/** The flags of the first CPU in /proc/cpuinfo (x86: `flags : fpu vme ...`). */
export function cpuFlags(cpuinfo: string | undefined): Set<string> | undefined {
  const line = cpuinfo?.split('\n').find((l) => /^flags\s*:/.test(l));
  return line === undefined ? undefined : new Set(line.slice(line.indexOf(':') + 1).trim().split(/\s+/));
}

/** Whether /proc/misc lists the kvm device ("232 kvm"). */
export function hasKvmMiscDevice(misc: string | undefined): boolean {
  return misc?.split('\n').some((line) => line.trim().split(/\s+/)[1] === 'kvm') ?? false;
}

function groupName(gid: number): string | undefined {
  const line = readText('/etc/group')?.split('\n').find((l) => l.split(':')[2] === String(gid));
  return line?.split(':')[0] || undefined;
}

/** The facts of this host about `path`, after opening it failed with `code`. */
export function hostFacts(path: string, code: string): KvmFacts {
  let device: KvmFacts['device'];
  try {
    const stat = statSync(path);
    device = { mode: stat.mode, uid: stat.uid, gid: stat.gid, groupName: groupName(stat.gid) };
  } catch {
    device = undefined;
  }
  return {
    path,
    code,
    arch: process.arch,
    cpuFlags: cpuFlags(readText('/proc/cpuinfo')),
    kvmMiscDevice: hasKvmMiscDevice(readText('/proc/misc')),
    device,
    uid: process.getuid?.() ?? -1,
  };
}

/** The error to throw for a failed open of the KVM device: a KvmUnavailableError with the
 * diagnosis when it is about the device (missing, or denied), else undefined. */
export function kvmUnavailable(error: unknown, path: string = DEFAULT_KVM_PATH): KvmUnavailableError | undefined {
  if (!(error instanceof NativeError) || error.call !== `open ${path}`) return undefined;
  if (!MISSING.has(error.code) && !DENIED.has(error.code)) return undefined;
  const diagnosis = diagnoseKvm(hostFacts(path, error.code));
  return new KvmUnavailableError(diagnosis.cause, diagnosis.message, path, { cause: error });
}

/** Kvm.open(path), its failure to open the device diagnosed (a KvmUnavailableError). */
export function openKvm(path: string = DEFAULT_KVM_PATH): Kvm {
  try {
    return Kvm.open(path);
  } catch (error) {
    throw kvmUnavailable(error, path) ?? error;
  }
}

/** Whether this process can open `path` (default /dev/kvm) as a KVM device, and if not, why.
 * Opens it and closes it again: cheap, and the only way to know about permission for sure. */
export function kvmAvailability(path: string = DEFAULT_KVM_PATH): KvmAvailability {
  try {
    Kvm.open(path).close();
    return { available: true };
  } catch (error) {
    const unavailable = kvmUnavailable(error, path);
    if (unavailable) return { available: false, cause: unavailable.reason, message: unavailable.message };
    return { available: false, cause: 'other', message: (error as Error).message };
  }
}
