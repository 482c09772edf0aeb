/**
 * Each vCPU's scheduler time, from its thread's /proc/PID/task/TID/schedstat: three numbers, ns
 * on a CPU, ns runnable but waiting on a run queue (the guest's steal; libvirt's vcpu.N.delay),
 * and timeslices run. Read with the stats fds' discipline: the file is opened once, and each
 * collection is one pread at offset 0 (a seq_file regenerates its text at offset 0) into a
 * buffer allocated once, its numbers written as u64 words in the layout of SCHEDSTAT_TABLE: a
 * SchedstatFile is one more table of its vCPU's source (source.ts, SourceTable), which the
 * mapping, the producer and the instruments read as they read a stats fd.
 *
 * Which thread: the kernel's id string `kvm-TID/vcpu-ID` names the thread that created the
 * vCPU. QEMU creates each vCPU on its own thread, which then runs it; a VMM that creates every
 * vCPU from one thread (the demo VM, the test VMMs, firecracker) gives them all the same TID,
 * whose time is not any one vCPU's. So a vCPU gets its creator's schedstat only where no other
 * vCPU of its process shares that thread, and the thread is not the process's main thread
 * (which created the VM: in a VMM that creates a single vCPU from it, that thread is the VMM's
 * own, and in the demo VM it is the agent's).
 */
import { O_RDONLY } from '../abi/linux.js';
import { NativeError } from '../native/errors.js';
import { closeFd, openPath, pread } from '../native/libc.js';
import type { DescriptorTable, StatDescriptor } from '../stats/descriptors.js';
import { TWO_POW_32 } from '../stats/u64.js';
import type { SourceTable, StatsSource } from './source.js';

function stat(name: string, unit: StatDescriptor['unit'], exponent: number, index: number): StatDescriptor {
  return { name, type: 'cumulative', unit, base: 10, exponent, size: 1, bucketSize: 0, offset: index * 8, index };
}

/**
 * The three schedstat numbers as a descriptor table (cumulative, u64 each), so they map to
 * `kvm.vcpu.sched.cpu_time`, `kvm.vcpu.sched.run_delay` (ns) and `kvm.vcpu.sched.timeslices`
 * as any vCPU stat maps. The `sched.` prefix keeps them apart from the kernel's KVM stat names.
 */
export const SCHEDSTAT_TABLE: DescriptorTable = {
  nameSize: 48,
  stats: [stat('sched.cpu_time', 'seconds', -9, 0), stat('sched.run_delay', 'seconds', -9, 1), stat('sched.timeslices', 'none', 0, 2)],
  skipped: [],
  dataSize: 24,
};

/** Whether a stat is one of SCHEDSTAT_TABLE's (not the kernel's). */
export function isSchedstat(stat: StatDescriptor): boolean {
  return SCHEDSTAT_TABLE.stats.includes(stat);
}

/** Three u64 in decimal, two spaces and a newline: 62 bytes at most. */
const TEXT_SIZE = 64;

/** One thread's schedstat file, open for reading at every collection. */
export class SchedstatFile implements SourceTable {
  readonly pid: number;
  readonly tid: number;
  /** What its numbers are: a vCPU's table. */
  readonly table = SCHEDSTAT_TABLE;
  readonly target = 'vcpu';
  /** The numbers as last read (read()), laid out as SCHEDSTAT_TABLE says. */
  readonly words = new Uint32Array(SCHEDSTAT_TABLE.dataSize / 4);
  #fd: number;
  readonly #text = new Uint8Array(TEXT_SIZE);
  /** The 32-bit words of the last buffer readInto() was given, made once per buffer. */
  #into: Uint8Array | undefined;
  #intoWords: Uint32Array | undefined;

  private constructor(pid: number, tid: number, fd: number) {
    this.pid = pid;
    this.tid = tid;
    this.#fd = fd;
  }

  /** Opens /proc/PID/task/TID/schedstat (O_RDONLY | O_CLOEXEC). NativeError ENOENT when TID is
   * not a live thread of PID. */
  static open(pid: number, tid: number): SchedstatFile {
    return new SchedstatFile(pid, tid, openPath(`/proc/${pid}/task/${tid}/schedstat`, O_RDONLY));
  }

  /** A schedstat text in a file of its own, read the same way (one pread at offset 0): a
   * recording's memfd in replay (replay.ts). Takes ownership of `fd`. */
  static over(fd: number, pid: number, tid: number): SchedstatFile {
    return new SchedstatFile(pid, tid, fd);
  }

  get fd(): number {
    return this.#fd;
  }

  /** The numbers as last read (read()) as exact integers: ns on a CPU, ns waiting, timeslices.
   * What a recording keeps of each snapshot. */
  values(): [cpuTimeNs: bigint, runDelayNs: bigint, timeslices: bigint] {
    const word = (i: number) => (BigInt(this.words[i * 2 + 1]!) << 32n) | BigInt(this.words[i * 2]!);
    return [word(0), word(1), word(2)];
  }

  get closed(): boolean {
    return this.#fd < 0;
  }

  /** One pread into `words`, as readInto. */
  read(): boolean {
    return this.#readWords(this.words);
  }

  /**
   * One pread of the file, its three numbers written into `buffer` (at least 24 bytes, 4-byte
   * aligned) as SCHEDSTAT_TABLE lays them out: host-endian 32-bit halves of each u64, exact to
   * 2^64. False when the thread has exited (the read fails with ESRCH) or the text is not three
   * numbers: the file has then ended and is closed. (A source's tables all read so: SourceTable.)
   */
  readInto(buffer: Uint8Array): boolean {
    if (buffer !== this.#into) {
      if (buffer.byteLength < SCHEDSTAT_TABLE.dataSize) {
        throw new RangeError(`readInto: the buffer has ${buffer.byteLength} bytes, but a schedstat file's numbers take ${SCHEDSTAT_TABLE.dataSize}: pass one of at least table.dataSize bytes`);
      }
      this.#intoWords = new Uint32Array(buffer.buffer, buffer.byteOffset, SCHEDSTAT_TABLE.dataSize / 4);
      this.#into = buffer;
    }
    return this.#readWords(this.#intoWords!);
  }

  #readWords(words: Uint32Array): boolean {
    if (this.#fd < 0) return false;
    let n: number;
    try {
      n = pread(this.#fd, this.#text, TEXT_SIZE, 0);
    } catch (error) {
      if (error instanceof NativeError) {
        this.close();
        return false;
      }
      throw error;
    }
    const text = this.#text;
    let field = 0;
    let low = 0;
    let high = 0;
    let digits = 0;
    for (let i = 0; i < n && field < 3; i++) {
      const c = text[i]!;
      if (c >= 48 && c <= 57) {
        // Decimal into two 32-bit halves: low stays below 2^32, high takes the carry.
        low = low * 10 + (c - 48);
        const carry = Math.floor(low / TWO_POW_32);
        low -= carry * TWO_POW_32;
        high = high * 10 + carry;
        digits++;
      } else if (digits > 0) {
        words[field * 2] = low;
        words[field * 2 + 1] = high;
        field++;
        low = high = digits = 0;
      }
    }
    if (field < 3) {
      this.close();
      return false;
    }
    return true;
  }

  close(): void {
    closeFd(this.#fd);
    this.#fd = -1;
  }
}

/** Why the vCPUs of a process get no scheduler time, or undefined when every one gets it. */
export type SchedstatVerdict = string | undefined;

/** Sources whose schedstat was decided (opened, or found not to be the vCPU's): never tried
 * again, so that a thread id reused after its vCPU thread exited is not taken for it. */
const decided = new WeakSet<StatsSource>();

/**
 * Gives each vCPU source of process `pid` (`sources`: every source held for it) its creating
 * thread's schedstat where that thread is the vCPU's own (see the top of this file), and takes
 * it away from vCPUs whose thread turned out to be shared (a vCPU created later by the same
 * thread). Returns why some vCPUs get none, once per call; undefined when all have it.
 */
export function attachSchedstats(pid: number, sources: readonly StatsSource[]): SchedstatVerdict {
  const vcpus = sources.filter((source) => source.file.target === 'vcpu' && !source.file.closed);
  const byThread = new Map<number, number>();
  for (const source of vcpus) byThread.set(source.file.threadId, (byThread.get(source.file.threadId) ?? 0) + 1);
  let shared: number | undefined;
  const byMain: (number | undefined)[] = [];
  const gone: (number | undefined)[] = [];
  const failed: string[] = [];
  for (const source of vcpus) {
    const tid = source.file.threadId;
    if ((byThread.get(tid) ?? 0) > 1) {
      source.schedstat?.close();
      source.schedstat = undefined;
      decided.add(source);
      shared ??= tid;
      continue;
    }
    if (decided.has(source)) continue;
    decided.add(source);
    if (tid === pid) {
      byMain.push(source.file.vcpuId);
      continue;
    }
    try {
      source.schedstat = SchedstatFile.open(pid, tid);
    } catch (error) {
      if (error instanceof NativeError && error.code === 'ENOENT') gone.push(source.file.vcpuId);
      else failed.push(`vCPU ${source.file.vcpuId}'s thread ${tid} cannot be read: ${(error as Error).message}`);
    }
  }
  const reasons = [
    ...(shared !== undefined ? [`its ${vcpus.length} vCPUs were created by one thread (${shared}), not each by its own`] : []),
    ...(byMain.length > 0 ? [`${vcpuList(byMain)} ${byMain.length === 1 ? 'was' : 'were'} created by its main thread (${pid}), not by a vCPU thread of its own`] : []),
    ...(gone.length > 0 ? [`the ${gone.length === 1 ? 'thread that created' : 'threads that created'} ${vcpuList(gone)} ${gone.length === 1 ? 'is' : 'are'} no longer among its threads`] : []),
    ...failed,
  ];
  return reasons.length > 0 ? reasons.join('; ') : undefined;
}

/** "vCPU 0", "vCPUs 2, 3". */
function vcpuList(ids: readonly (number | undefined)[]): string {
  return ids.length === 1 ? `vCPU ${ids[0]}` : `vCPUs ${ids.join(', ')}`;
}

/** The line said once per VM whose vCPUs get no scheduler time. */
export function noSchedstatMessage(pid: number, vmName: string | undefined, verdict: string): string {
  return `process ${pid}${vmName !== undefined ? ` (VM ${vmName})` : ''}: no per-vCPU scheduler time (kvm.vcpu.sched.*): ${verdict}`;
}
