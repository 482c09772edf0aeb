/**
 * What /proc says about the processes that own VMs: thread to process, start time, fd links,
 * command line. Every function returns undefined (or an empty list) for a process that is gone.
 */
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { USER_HZ } from '../abi/kvm.js';

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, 'latin1');
  } catch {
    return undefined;
  }
}

/** The process (thread group) a thread belongs to: KVM's id strings name threads. */
export function processOfThread(tid: number): number | undefined {
  const status = readText(`/proc/${tid}/status`);
  const match = status && /^Tgid:\s*(\d+)$/m.exec(status);
  return match ? Number(match[1]) : undefined;
}

/** When the process started, in milliseconds since the epoch (10 ms resolution). */
export function processStartTimeMs(pid: number): number | undefined {
  const stat = readText(`/proc/${pid}/stat`);
  const uptime = readText('/proc/uptime');
  if (!stat || !uptime) return undefined;
  // The command name (field 2) may hold spaces and parentheses: fields resume after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const startTicks = Number(fields[19]); // field 22, starttime
  const uptimeSeconds = Number(uptime.split(' ')[0]);
  if (!Number.isFinite(startTicks) || !Number.isFinite(uptimeSeconds)) return undefined;
  return Math.round(Date.now() - uptimeSeconds * 1000 + (startTicks * 1000) / USER_HZ);
}

export interface FdLink {
  readonly fd: number;
  readonly target: string;
}

/** The open fds of a process and what they point to. Needs ptrace access to read another's;
 * throws the fs error (ENOENT, EACCES) when the list cannot be read. */
export function fdLinks(pid: number | 'self'): FdLink[] {
  const names = readdirSync(`/proc/${pid}/fd`);
  const links: FdLink[] = [];
  for (const name of names) {
    try {
      links.push({ fd: Number(name), target: readlinkSync(`/proc/${pid}/fd/${name}`) });
    } catch {
      // Closed between readdir and readlink.
    }
  }
  return links.sort((a, b) => a.fd - b.fd);
}

/** The command line, split into arguments. */
export function commandLine(pid: number): string[] {
  const raw = readText(`/proc/${pid}/cmdline`);
  return raw ? raw.split('\0').filter((arg, i, all) => arg !== '' || i < all.length - 1) : [];
}

/** The guest name a VMM was started with: QEMU's `-name guest=X,...` or `-name X`. */
export function vmNameFromCommandLine(args: readonly string[]): string | undefined {
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    let value: string | undefined;
    if (arg === '-name' || arg === '--name') value = args[i + 1];
    else if (arg.startsWith('-name=') || arg.startsWith('--name=')) value = arg.slice(arg.indexOf('=') + 1);
    if (value === undefined) continue;
    // QEMU options: comma-separated, ",," escapes a comma; the first bare value is the guest.
    const parts = value.replace(/,,/g, '\0').split(',').map((part) => part.replace(/\0/g, ','));
    for (const part of parts) {
      if (part.startsWith('guest=')) return part.slice('guest='.length) || undefined;
    }
    const first = parts[0];
    if (first && !first.includes('=')) return first;
  }
  return undefined;
}
