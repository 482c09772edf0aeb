/**
 * Replaying a recording through the same read path as a live VM: each recorded fd's image is
 * written into a memfd (an anonymous regular file) and opened with StatsFile.open like any
 * stats fd, so every collection is one pread per fd. As time passes the replayer rewrites each
 * data block with the snapshot due, at the recorded pace, in a loop without fake resets:
 * cumulative values and histogram buckets carry the recorded change forward at each wrap (the
 * loop's step from the last snapshot to the first adds what the first step added), while
 * instants, peaks and booleans cycle through their recorded values. A vCPU recorded with its
 * thread's scheduler time gets a memfd holding that schedstat text, which a SchedstatFile reads
 * with one pread as it reads /proc, rewritten with each snapshot and carried forward alike.
 */
import { ftruncateSync, writeSync } from 'node:fs';
import { closeOnThrow, memfdCreate } from '../native/libc.js';
import { StatsFile } from '../stats/stats-file.js';
import { type Recording, RecordingError, type RecordedFd, type RecordedVm, savedSource } from './recording.js';
import { SchedstatFile } from './schedstat.js';
import type { StatsSource } from './source.js';

export interface ReplayOptions {
  /** ms since the epoch; default Date.now. The replay starts at its first reading. */
  readonly clock?: () => number;
  /** Where the recording came from, for each source's origin ("recording PATH"). */
  readonly origin?: string;
}

/** One recorded fd in replay: its memfd (owned by the StatsFile), every snapshot's data, which
 * u64 words carry forward at a wrap, and by how much. */
interface ReplayedFd {
  readonly file: StatsFile;
  readonly dataOffset: number;
  readonly snapshots: readonly BigUint64Array[];
  /** Per u64 of the data block: the last snapshot's value less the first's where it is a
   * cumulative value or a histogram bucket that did not go down, else 0. */
  readonly carry: BigUint64Array;
  readonly out: BigUint64Array;
  /** Its vCPU thread's schedstat in replay, where it was recorded (set once it is open). */
  schedstat: ReplayedSchedstat | undefined;
}

/** A recorded schedstat in replay: its memfd (owned by the SchedstatFile), the three numbers at
 * every snapshot, and what a loop carries forward (all three are cumulative). */
interface ReplayedSchedstat {
  readonly file: SchedstatFile;
  readonly snapshots: readonly (readonly bigint[])[];
  readonly carry: readonly bigint[];
}

/** The text /proc/PID/task/TID/schedstat holds for these numbers. */
function schedstatText(numbers: readonly bigint[]): Buffer {
  return Buffer.from(`${numbers.join(' ')}\n`, 'latin1');
}

/** Writes a schedstat text at offset 0 of its memfd, and cuts what a longer one left after it. */
function writeSchedstat(fd: number, numbers: readonly bigint[]): void {
  const text = schedstatText(numbers);
  writeSync(fd, text, 0, text.byteLength, 0);
  ftruncateSync(fd, text.byteLength);
}

/** Opens a recorded vCPU's schedstat in a memfd at the first snapshot. */
function openSchedstat(recorded: RecordedFd, pid: number | undefined, threadId: number): ReplayedSchedstat | undefined {
  if (recorded.schedstat === undefined) return undefined;
  const snapshots = recorded.schedstat.map((text) => text.split(' ').map(BigInt));
  const first = snapshots[0]!;
  const last = snapshots.at(-1)!;
  const fd = memfdCreate(`kvm-stats-otel replay ${recorded.id} schedstat`);
  closeOnThrow(fd, () => writeSchedstat(fd, first));
  return {
    file: SchedstatFile.over(fd, pid ?? 0, threadId),
    snapshots,
    // A value that went down while recorded carries nothing, as for a stats fd.
    carry: first.map((value, i) => (last[i]! >= value ? last[i]! - value : 0n)),
  };
}

/** A copy of `bytes` as u64 words (the data block is 8-byte aligned and a multiple of 8). */
function words(bytes: Uint8Array): BigUint64Array {
  const copy = new BigUint64Array(bytes.byteLength / 8);
  new Uint8Array(copy.buffer).set(bytes.subarray(0, copy.byteLength));
  return copy;
}

/** The recorded change of every cumulative word over the recording; 0 elsewhere, and where a
 * value went down over it (a reset while recording: carrying it would run below zero). */
function carryOf(file: StatsFile, first: BigUint64Array, last: BigUint64Array): BigUint64Array {
  const carry = new BigUint64Array(first.length);
  for (const stat of file.table.stats) {
    if (stat.type === 'instant' || stat.type === 'peak') continue;
    const at = stat.offset / 8;
    for (let w = at; w < at + stat.size; w++) carry[w] = last[w]! >= first[w]! ? last[w]! - first[w]! : 0n;
  }
  return carry;
}

/** Opens one recorded fd: its image in a memfd, parsed as a live fd is, and its data blocks
 * checked against the table. */
function openFd(image: Uint8Array, data: readonly Uint8Array[], name: string, where: string): ReplayedFd {
  const fd = memfdCreate(name);
  let file: StatsFile;
  closeOnThrow(fd, () => {
    if (writeSync(fd, image, 0, image.byteLength, 0) !== image.byteLength) throw new RecordingError(`${where}: writing its image into a memfd came up short`);
  });
  try {
    // The producer reads into its own buffer: no block kept (the snapshots are kept here).
    file = StatsFile.open(fd, { owned: true, keepOpenData: false });
  } catch (error) {
    throw new RecordingError(`${where}.image: ${(error as Error).message}`);
  }
  try {
    const size = file.table.dataSize;
    const dataOffset = file.header.dataOffset;
    const first = words(image.subarray(dataOffset, dataOffset + size));
    const snapshots = [first];
    data.forEach((block, k) => {
      if (block.byteLength !== size) throw new RecordingError(`${where}.data[${k}] is ${block.byteLength} bytes, but its image's data block is ${size}`);
      snapshots.push(words(block));
    });
    return { file, dataOffset, snapshots, carry: carryOf(file, first, snapshots.at(-1)!), out: new BigUint64Array(first.length), schedstat: undefined };
  } catch (error) {
    file.close();
    throw error;
  }
}

/** What a source's origin says: the file, and whether it is a real VM's. */
export function recordingOrigin(recording: Recording, origin: string): string {
  return `${origin}${recording.synthetic ? ` (synthetic stand-in made by ${recording.madeBy})` : ''}`;
}

export class RecordingReplay {
  readonly recording: Recording;
  /** One per recorded fd, in the recording's order; the same objects for the replay's life. */
  readonly sources: readonly StatsSource[];
  readonly #fds: readonly ReplayedFd[];
  readonly #clock: () => number;
  readonly #start: number;
  #step = 0;
  #closed = false;

  private constructor(recording: Recording, fds: ReplayedFd[], sources: StatsSource[], clock: () => number, start: number) {
    this.recording = recording;
    this.#fds = fds;
    this.sources = sources;
    this.#clock = clock;
    this.#start = start;
  }

  /** Opens every recorded fd in a memfd at the first snapshot. Throws a RecordingError naming
   * the fd whose image or data does not check; nothing stays open then. */
  static open(recording: Recording, options: ReplayOptions = {}): RecordingReplay {
    const clock = options.clock ?? Date.now;
    const start = clock();
    const label = options.origin ?? 'recording';
    const origin = recordingOrigin(recording, label);
    const fds: ReplayedFd[] = [];
    const sources: StatsSource[] = [];
    try {
      recording.vms.forEach((vm: RecordedVm, v) => {
        // Cumulative values are as old as they were at the first snapshot: the replay's start
        // time stands that far back, so rates over the loop stay what they were.
        const startTimeMs = vm.startTimeMs !== undefined ? start - Math.max(0, recording.recordedAtMs - vm.startTimeMs) : start;
        vm.fds.forEach((recorded, i) => {
          const where = `invalid ${label}: vms[${v}].fds[${i}]`;
          const fd = openFd(recorded.image, recorded.data, `kvm-stats-otel replay ${recorded.id}`, where);
          fds.push(fd);
          if (fd.file.id !== recorded.id) throw new RecordingError(`${where}.id is ${recorded.id}, but its image's id is ${fd.file.id}`);
          fd.schedstat = openSchedstat(recorded, vm.pid, fd.file.threadId);
          const source = savedSource(fd.file, vm, recorded.vcpuIndex, startTimeMs, origin);
          if (fd.schedstat !== undefined) source.schedstat = fd.schedstat.file;
          sources.push(source);
        });
      });
    } catch (error) {
      for (const fd of fds) {
        fd.file.close();
        fd.schedstat?.file.close();
      }
      throw error;
    }
    return new RecordingReplay(recording, fds, sources, clock, start);
  }

  /** The step due at `now`: loops done times the steps of a loop, plus the step in this one. */
  stepAt(now: number): number {
    const times = this.recording.snapshotsMs;
    const n = times.length;
    if (n === 1) return 0;
    const loopMs = times[n - 1]!;
    const elapsed = Math.max(0, now - this.#start);
    const loops = Math.floor(elapsed / loopMs);
    const into = elapsed - loops * loopMs;
    let p = 0;
    while (p + 1 < n - 1 && times[p + 1]! <= into) p++;
    return loops * (n - 1) + p;
  }

  /**
   * Writes the data blocks due now, if the step changed since the last call: one pwrite per fd.
   * Returns the step. Called at every collection (the provider's sources()) and on a timer.
   */
  sync(now: number = this.#clock()): number {
    const step = this.stepAt(now);
    if (step === this.#step || this.#closed) return this.#step;
    this.#step = step;
    const steps = Math.max(1, this.recording.snapshotsMs.length - 1);
    const loops = BigInt(Math.floor(step / steps));
    const p = step % steps;
    for (const fd of this.#fds) {
      const snapshot = fd.snapshots[p]!;
      const { carry, out } = fd;
      // BigUint64Array stores modulo 2^64, as the kernel's u64 would wrap.
      for (let w = 0; w < out.length; w++) out[w] = snapshot[w]! + loops * carry[w]!;
      writeSync(fd.file.fd, new Uint8Array(out.buffer), 0, out.byteLength, fd.dataOffset);
      const schedstat = fd.schedstat;
      if (schedstat !== undefined && !schedstat.file.closed) {
        const at = schedstat.snapshots[p]!;
        writeSchedstat(schedstat.file.fd, at.map((value, i) => BigInt.asUintN(64, value + loops * schedstat.carry[i]!)));
      }
    }
    return step;
  }

  /** The smallest gap between snapshots: how often a timer needs to sync. */
  get stepMs(): number {
    const times = this.recording.snapshotsMs;
    let least = Infinity;
    for (let k = 1; k < times.length; k++) least = Math.min(least, times[k]! - times[k - 1]!);
    return least;
  }

  /** Closes every memfd; safe to call twice. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const fd of this.#fds) {
      fd.file.close();
      fd.schedstat?.file.close();
    }
  }
}
