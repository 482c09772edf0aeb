/**
 * Errors from native calls: which call failed, the errno name, and what is needed. The hints
 * name no command-line flag: a CLI adds its own from `call` and `code`.
 */
import { constants } from 'node:os';

const errnoNames = new Map<number, string>();
for (const [name, value] of Object.entries(constants.errno)) {
  if (!errnoNames.has(value)) errnoNames.set(value, name);
}

/** "EACCES" for 13; "errno 1234" for a number this platform does not name. */
export function errnoName(errno: number): string {
  return errnoNames.get(errno) ?? `errno ${errno}`;
}

/** What to do, by call and errno name; `*` matches any call. First match wins. */
const HINTS: readonly [call: string, code: string, hint: string][] = [
  ['open /dev/kvm', 'ENOENT', 'KVM is not available here: load the kvm module (modprobe kvm_intel or kvm_amd) or enable virtualization'],
  ['open /dev/kvm', 'EACCES', 'run as root or join the kvm group'],
  ['open /dev/kvm', 'EPERM', 'run as root or join the kvm group'],
  ['open', 'ENOENT', 'check the path'],
  ['open', 'EACCES', 'check the file permissions or run as a user that can read it'],
  ['KVM_GET_STATS_FD', 'EIO', 'only the process that created the VM can do this; copy the stats fds the VMM holds instead'],
  ['KVM_GET_STATS_FD', 'ENOTTY', 'this kernel has no binary stats: Linux 5.14 or newer is needed'],
  ['KVM_GET_STATS_FD', 'EINVAL', 'this kernel has no binary stats: Linux 5.14 or newer is needed'],
  ['KVM_CREATE_VM', 'EIO', 'the process that opened /dev/kvm must create the VM itself'],
  ['KVM_CREATE_VM', 'ENOMEM', 'the host is out of memory or VM slots; free some and retry'],
  ['KVM_CREATE_VM', 'EINVAL', 'the host refused a default VM; check dmesg for KVM messages'],
  ['KVM_CREATE_VCPU', 'EEXIST', 'that vCPU id is already in use in this VM; pick another'],
  ['KVM_CREATE_VCPU', 'EINVAL', 'the vCPU id is beyond what this host allows (KVM_CAP_MAX_VCPU_ID)'],
  ['*', 'EIO', 'only a thread of the process that created the VM can do this'],
  ['*', 'EMFILE', 'too many open files: raise the open-file limit (ulimit -n) or read fewer VMs'],
  ['*', 'ENFILE', 'the system is out of file descriptors: close some and retry'],
  ['pidfd_open', 'ESRCH', 'no such process: check the pid, it may have exited'],
  ['pidfd_open', 'ENOSYS', 'this kernel has no pidfd_open: Linux 5.6 or newer is needed'],
  ['pidfd_getfd', 'EPERM', 'copying another process\'s fd needs the same uid or CAP_SYS_PTRACE (and no stricter Yama ptrace_scope)'],
  ['pidfd_getfd', 'EBADF', 'the process closed that fd in the meantime; read it again'],
  ['pidfd_getfd', 'ESRCH', 'the process has exited'],
  ['pidfd_getfd', 'ENOSYS', 'this kernel has no pidfd_getfd: Linux 5.6 or newer is needed'],
  ['pread', 'EBADF', 'the stats fd was closed underneath the reader'],
  ['*', 'EBADF', 'the fd is not open'],
  ['*', 'EACCES', 'permission denied: run as root or as the owner of the resource'],
  ['*', 'EPERM', 'operation not permitted: run as root or with the needed capability'],
];

function hintFor(call: string, code: string): string | undefined {
  for (const [hintCall, hintCode, hint] of HINTS) {
    if (hintCode !== code) continue;
    if (hintCall === '*' || hintCall === call || call.startsWith(`${hintCall} `)) return hint;
  }
  return undefined;
}

/** A failed system call, carrying errno like rust-vmm's errors do. */
export class NativeError extends Error {
  readonly call: string;
  readonly errno: number;
  readonly code: string;
  /** No hint knows this call and errno: a failure nobody expected, worth a report. */
  readonly unexpected: boolean;

  constructor(call: string, errno: number, hint?: string) {
    const code = errnoName(errno);
    const known = hint ?? hintFor(call, code);
    super(`${call} failed with ${code}: ${known ?? 'unexpected failure from the kernel; report it'}`);
    this.name = 'NativeError';
    this.call = call;
    this.errno = errno;
    this.code = code;
    this.unexpected = known === undefined;
  }
}
