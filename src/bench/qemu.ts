/**
 * A real QEMU guest for tests and the benchmark: qemu-system-x86_64 with KVM, no disk, no
 * devices, QMP on a Unix socket. Without a disk the firmware halts after looking for a boot
 * device, which is enough: the VM and its vCPUs exist in KVM.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { QmpClient } from './qmp-client.js';

export const QEMU_BINARY = 'qemu-system-x86_64';

export interface QemuGuestOptions {
  readonly vcpus?: number;
  /** Room for vCPUs hot-plugged later (device_add); default: vcpus. */
  readonly maxVcpus?: number;
  readonly memoryMiB?: number;
  /** Becomes `-name guest=NAME,debug-threads=on`. */
  readonly name?: string;
  /** `debug-threads=on` names each vCPU thread "CPU N/KVM", as libvirt always has it; default true. */
  readonly debugThreads?: boolean;
  /** `-uuid UUID`, as libvirt passes the domain's. */
  readonly uuid?: string;
  /** The CPU topology of `-smp` (maxcpus = sockets x cores x threads unless maxVcpus says otherwise). */
  readonly topology?: { readonly sockets: number; readonly cores: number; readonly threads: number };
  /** Extra environment, e.g. LD_PRELOAD of the stats helper. */
  readonly env?: Record<string, string>;
  readonly binary?: string;
  /** `-cpu MODEL`; default: QEMU's own default model, which runs on Intel and AMD hosts alike
   * (`host` and `max` abort on some AMD hosts when QEMU 7.2 sets MSR 0x10a). */
  readonly cpu?: string;
  /** How long to wait for QMP to come up; default 10 s. */
  readonly timeoutMs?: number;
}

/** Whether the QEMU binary is on PATH. */
export function qemuAvailable(binary = QEMU_BINARY): boolean {
  return (process.env.PATH ?? '').split(':').some((dir) => dir && existsSync(join(dir, binary)));
}

export class QemuGuest {
  private constructor(
    readonly process: ChildProcess,
    readonly qmp: QmpClient,
    readonly qmpPath: string,
    private readonly dir: string,
  ) {}

  get pid(): number {
    return this.process.pid!;
  }

  static async start(options: QemuGuestOptions = {}): Promise<QemuGuest> {
    const binary = options.binary ?? QEMU_BINARY;
    const dir = mkdtempSync(join(tmpdir(), 'kvm-stats-qemu-'));
    const qmpPath = join(dir, 'qmp.sock');
    const topology = options.topology;
    const maxVcpus = options.maxVcpus ?? (topology ? topology.sockets * topology.cores * topology.threads : (options.vcpus ?? 2));
    const smp = [`${options.vcpus ?? 2}`, ...(topology ? [`sockets=${topology.sockets}`, `cores=${topology.cores}`, `threads=${topology.threads}`] : []), `maxcpus=${maxVcpus}`];
    const args = [
      '-enable-kvm', ...(options.cpu ? ['-cpu', options.cpu] : []), '-smp', smp.join(','), '-m', String(options.memoryMiB ?? 64),
      '-nodefaults', '-no-user-config', '-display', 'none',
      '-name', `guest=${options.name ?? 'kvm-stats-test'}${options.debugThreads === false ? '' : ',debug-threads=on'}`,
      ...(options.uuid ? ['-uuid', options.uuid] : []),
      '-qmp', `unix:${qmpPath},server=on,wait=off`,
    ];
    const child = spawn(binary, args, { env: { ...process.env, ...options.env }, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const deadline = Date.now() + (options.timeoutMs ?? 10_000);
    try {
      for (;;) {
        if (child.exitCode !== null || child.signalCode !== null) {
          throw new Error(`${binary} exited (${child.exitCode ?? child.signalCode}) before QMP came up: ${stderr.trim() || 'no output'}`);
        }
        if (existsSync(qmpPath)) {
          try {
            return new QemuGuest(child, await QmpClient.connect(qmpPath), qmpPath, dir);
          } catch {
            // Socket there but not listening yet.
          }
        }
        if (Date.now() > deadline) throw new Error(`${binary} did not open its QMP socket within ${options.timeoutMs ?? 10_000} ms`);
        await sleep(20);
      }
    } catch (error) {
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
      throw error;
    }
  }

  /** Shuts QEMU down through QMP `quit` and waits for it to exit (SIGKILL after 5 s). */
  async stop(): Promise<void> {
    if (this.process.exitCode === null && this.process.signalCode === null) {
      const exited = once(this.process, 'exit');
      await this.qmp.execute('quit').catch(() => undefined);
      const timer = setTimeout(() => this.process.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    this.qmp.close();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
