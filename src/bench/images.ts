/**
 * A fleet of stats images in memfds, for measuring where there is no /dev/kvm: N VMs, each one
 * VM fd and M vCPU fds, cloned from the VM of the shipped recording (recordings/
 * demo.kvmrec.json.gz: 16 VM stats; 47 vCPU stats with three 32-bucket histograms, the tables of
 * docs/metrics.md), each VM with its own pid, name and kernel ids. Every collection reads each
 * memfd with one pread as it would a stats fd. step() moves every data block to the recording's
 * next snapshot (carried forward at each loop as a replay does), so that values change between
 * collections: one template replay of the recorded VM and one vCPU computes the blocks, and each
 * clone gets its kind's block with one pwrite.
 */
import { writeSync } from 'node:fs';
import { closeOnThrow, memfdCreate, pread } from '../native/libc.js';
import { StatsFile } from '../stats/stats-file.js';
import { SHIPPED_RECORDING } from '../setup/demo-fallback.js';
import { type Recording, readRecording, savedSource } from '../sources/recording.js';
import { RecordingReplay } from '../sources/replay.js';
import { type StatsSource, closeSources } from '../sources/source.js';

export interface ImageFleetOptions {
  readonly vms: number;
  readonly vcpus: number;
  /** VM i is named `${namePrefix}-${i}`. Default "images". */
  readonly namePrefix?: string;
  /** Default: the package's shipped recording. */
  readonly recording?: string;
}

/** Pids of the cloned VMs: near the kernel's highest (pid_max 4,194,304), so that nobody
 * mistakes them for this host's, and still what a saved identity accepts. */
const FIRST_PID = 4_000_000;

/** An image with its id string replaced (the id field is name_size bytes, NUL-padded). */
function withId(image: Uint8Array, id: string): Buffer {
  const copy = Buffer.from(image);
  const nameSize = copy.readUInt32LE(4);
  const idOffset = copy.readUInt32LE(12);
  copy.fill(0, idOffset, idOffset + nameSize);
  copy.write(id, idOffset, nameSize - 1, 'latin1');
  return copy;
}

function openClone(image: Uint8Array, id: string): StatsFile {
  const fd = memfdCreate(`kvm-stats-otel bench ${id}`);
  const bytes = withId(image, id);
  closeOnThrow(fd, () => writeSync(fd, bytes, 0, bytes.byteLength, 0));
  return StatsFile.open(fd, { owned: true });
}

export class ImageFleet {
  /** Per VM: its VM fd's source, then one per vCPU. Closed by close(). */
  readonly sources: readonly StatsSource[];
  readonly #template: RecordingReplay;
  /** The template's VM and vCPU sources, and a buffer for each one's data block. */
  readonly #kinds: readonly { readonly source: StatsSource; readonly block: Uint8Array }[];
  #now = 0;

  private constructor(sources: StatsSource[], template: RecordingReplay) {
    this.sources = sources;
    this.#template = template;
    this.#kinds = template.sources.map((source) => ({ source, block: new Uint8Array(source.file.table.dataSize) }));
  }

  static fdCount(vms: number, vcpus: number): number {
    return vms * (1 + vcpus);
  }

  static create(options: ImageFleetOptions): ImageFleet {
    const { vms, vcpus } = options;
    if (!Number.isInteger(vms) || vms < 1 || vms > 194_304 || !Number.isInteger(vcpus) || vcpus < 0) {
      throw new RangeError(`image fleet: needs a whole number of VMs (1 to 194,304) and vCPUs (at least 0), not ${vms} x ${vcpus}`);
    }
    const path = options.recording ?? SHIPPED_RECORDING;
    const recorded = readRecording(path);
    const vm = recorded.vms[0];
    const vmFd = vm?.fds.find((fd) => !fd.id.includes('/vcpu-'));
    const vcpuFd = vm?.fds.find((fd) => fd.id.includes('/vcpu-'));
    if (!vm || !vmFd || !vcpuFd) throw new Error(`image fleet: ${path} has no VM with a VM fd and a vCPU fd to clone: use a recording of a VM with vCPUs`);
    // Only the stats fds: schedstat files would add reads the pread floor does not make.
    const template: Recording = { ...recorded, vms: [{ ...vm, fds: [vmFd, vcpuFd].map((fd) => ({ ...fd, schedstat: undefined })) }] };
    // Its time is the fleet's own: step() moves it one snapshot on.
    const replay = RecordingReplay.open(template, { clock: () => 0, origin: 'bench template' });
    const sources: StatsSource[] = [];
    try {
      const prefix = options.namePrefix ?? 'images';
      const startTimeMs = Date.now();
      for (let i = 0; i < vms; i++) {
        const owner = { pid: FIRST_PID + i, vmName: `${prefix}-${i}` };
        sources.push(savedSource(openClone(vmFd.image, `kvm-${owner.pid}`), owner, undefined, startTimeMs, 'bench image'));
        for (let n = 0; n < vcpus; n++) {
          sources.push(savedSource(openClone(vcpuFd.image, `kvm-${owner.pid}/vcpu-${n}`), owner, n, startTimeMs, 'bench image'));
        }
      }
    } catch (error) {
      closeSources(sources);
      replay.close();
      throw error;
    }
    const made = new ImageFleet(sources, replay);
    made.step();
    return made;
  }

  /** Moves every fd's data block to the next snapshot: one pwrite per fd. */
  step(): void {
    this.#now += this.#template.stepMs;
    this.#template.sync(this.#now);
    for (const { source, block } of this.#kinds) pread(source.file.fd, block, block.length, source.file.header.dataOffset);
    const [vm, vcpu] = this.#kinds;
    for (const { file } of this.sources) {
      const block = (file.target === 'vcpu' ? vcpu : vm)!.block;
      writeSync(file.fd, block, 0, block.length, file.header.dataOffset);
    }
  }

  close(): void {
    closeSources(this.sources);
    this.#template.close();
  }
}
