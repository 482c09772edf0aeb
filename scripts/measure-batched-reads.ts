/**
 * Batched reads (issue 20): every fd's pread in one call into the kernel through io_uring, made
 * from JavaScript through koffi (io_uring_setup and io_uring_enter by syscall(2), the rings
 * mmap'd, one IORING_OP_READ per fd at its data offset into a buffer of its own), timed beside
 * the koffi floor (a pread call per fd) and the C floor (one FFI call into a C loop of preads),
 * interleaved, on the bench's image fleet (stats images in memfds) at each size. The submission
 * entries never change between collections (same fd, offset, length, buffer), so they are written
 * once; a collection writes the SQ ring's index array, bumps its tail, enters once, and checks
 * every completion. Where io_uring cannot be set up (kernel.io_uring_disabled, a seccomp filter
 * in a container, an old kernel) it says so, as the read path would have to fall back.
 *
 *   node --import tsx scripts/measure-batched-reads.ts [--sizes 2500,10000] [--vcpus 4] [--runs 101]
 */
import { parseArgs } from 'node:util';
import koffi from 'koffi';
import { cPreadFloor } from '../src/bench/c-floor.js';
import { ImageFleet } from '../src/bench/images.js';
import { summarize } from '../src/bench/samples.js';
import { pread } from '../src/native/libc.js';
import type { StatsSource } from '../src/sources/source.js';

const { values } = parseArgs({
  options: {
    sizes: { type: 'string', default: '2500,10000' },
    vcpus: { type: 'string', default: '4' },
    runs: { type: 'string', default: '101' },
  },
});

// x86_64 syscall numbers and the io_uring ABI (include/uapi/linux/io_uring.h).
const NR_IO_URING_SETUP = 425;
const NR_IO_URING_ENTER = 426;
const IORING_OFF_SQ_RING = 0;
const IORING_OFF_CQ_RING = 0x8000000;
const IORING_OFF_SQES = 0x10000000;
const IORING_FEAT_SINGLE_MMAP = 1;
const IORING_ENTER_GETEVENTS = 1;
const IORING_OP_READ = 22;
const PARAMS_SIZE = 120;
const SQE_SIZE = 64;
const CQE_SIZE = 16;
const PROT_READ_WRITE = 3;
const MAP_SHARED_POPULATE = 0x01 | 0x8000;

const libc = koffi.load('libc.so.6');
const syscall6 = libc.func('syscall', 'long', ['long', 'long', 'long', 'long', 'long', 'long', 'long']);
const syscallSetup = libc.func('syscall', 'long', ['long', 'uint32_t', 'void *']);
const mmap = libc.func('mmap', 'void *', ['void *', 'size_t', 'int', 'int', 'int', 'int64_t']);
const munmap = libc.func('munmap', 'int', ['void *', 'size_t']);
const close = libc.func('close', 'int', ['int']);

function map(length: number, fd: number, offset: number): { pointer: unknown; view: ArrayBuffer; address: bigint } {
  const pointer = mmap(null, length, PROT_READ_WRITE, fd < 0 ? 0x01 | 0x20 : MAP_SHARED_POPULATE, fd, offset);
  const address = koffi.address(pointer);
  if (address === 0xffffffffffffffffn) throw new Error(`mmap of io_uring at ${offset.toString(16)} failed: errno ${koffi.errno()}`);
  return { pointer, view: koffi.view(pointer, length), address };
}

/** One io_uring holding a read per source, ready to submit them all with one io_uring_enter. */
class BatchedReads {
  readonly #ring: number;
  readonly #n: number;
  readonly #expected: Int32Array;
  readonly #sqTail: Uint32Array;
  readonly #sqMask: number;
  readonly #sqArray: Uint32Array;
  readonly #cqHead: Uint32Array;
  readonly #cqTail: Uint32Array;
  readonly #cqMask: number;
  readonly #cqes: DataView;
  readonly #maps: { pointer: unknown; length: number }[] = [];

  private constructor(ring: number, sources: readonly StatsSource[], params: DataView) {
    this.#ring = ring;
    const n = sources.length;
    this.#n = n;
    const sqEntries = params.getUint32(0, true);
    const cqEntries = params.getUint32(4, true);
    const sq = (field: number) => params.getUint32(40 + field, true);
    const cq = (field: number) => params.getUint32(80 + field, true);
    const sqSize = sq(24) + sqEntries * 4;
    const cqSize = cq(20) + cqEntries * CQE_SIZE;
    const single = (params.getUint32(20, true) & IORING_FEAT_SINGLE_MMAP) !== 0;
    const sqRing = map(single ? Math.max(sqSize, cqSize) : sqSize, ring, IORING_OFF_SQ_RING);
    const cqRing = single ? sqRing : map(cqSize, ring, IORING_OFF_CQ_RING);
    const sqes = map(sqEntries * SQE_SIZE, ring, IORING_OFF_SQES);
    this.#maps.push({ pointer: sqRing.pointer, length: single ? Math.max(sqSize, cqSize) : sqSize }, { pointer: sqes.pointer, length: sqEntries * SQE_SIZE });
    if (!single) this.#maps.push({ pointer: cqRing.pointer, length: cqSize });
    this.#sqTail = new Uint32Array(sqRing.view, sq(4), 1);
    this.#sqMask = new Uint32Array(sqRing.view, sq(8), 1)[0]!;
    this.#sqArray = new Uint32Array(sqRing.view, sq(24), sqEntries);
    this.#cqHead = new Uint32Array(cqRing.view, cq(0), 1);
    this.#cqTail = new Uint32Array(cqRing.view, cq(4), 1);
    this.#cqMask = new Uint32Array(cqRing.view, cq(8), 1)[0]!;
    this.#cqes = new DataView(cqRing.view, cq(20), cqEntries * CQE_SIZE);
    // A buffer of its own per fd (a read path keeps each block), all in one mapping.
    const total = sources.reduce((sum, s) => sum + s.file.table.dataSize, 0);
    const buffers = map(total, -1, 0);
    this.#maps.push({ pointer: buffers.pointer, length: total });
    this.#expected = Int32Array.from(sources, (s) => s.file.table.dataSize);
    const entries = new DataView(sqes.view);
    let at = 0n;
    sources.forEach((source, i) => {
      const e = i * SQE_SIZE;
      for (let b = 0; b < SQE_SIZE; b += 8) entries.setBigUint64(e + b, 0n);
      entries.setUint8(e, IORING_OP_READ);
      entries.setInt32(e + 4, source.file.fd, true);
      entries.setBigUint64(e + 8, BigInt(source.file.header.dataOffset), true);
      entries.setBigUint64(e + 16, buffers.address + at, true);
      entries.setUint32(e + 24, source.file.table.dataSize, true);
      entries.setBigUint64(e + 32, BigInt(i), true);
      at += BigInt(source.file.table.dataSize);
    });
  }

  /** A ring of at least `sources.length` entries, or why there is none. */
  static setUp(sources: readonly StatsSource[]): BatchedReads | { readonly unavailable: string } {
    let entries = 1;
    while (entries < sources.length) entries *= 2;
    const params = new Uint8Array(PARAMS_SIZE);
    const ring = Number(syscallSetup(NR_IO_URING_SETUP, entries, params));
    if (ring < 0) {
      const errno = koffi.errno();
      const why = errno === 1 ? 'EPERM: kernel.io_uring_disabled, or a policy' : errno === 38 ? 'ENOSYS: no io_uring, or a seccomp filter' : `errno ${errno}`;
      return { unavailable: `io_uring_setup failed (${why})` };
    }
    return new BatchedReads(ring, sources, new DataView(params.buffer));
  }

  /** Every read, submitted and waited for with one io_uring_enter; throws on a short read. */
  read = (): void => {
    const n = this.#n;
    const tail = this.#sqTail[0]!;
    for (let i = 0; i < n; i++) this.#sqArray[(tail + i) & this.#sqMask] = i;
    Atomics.store(this.#sqTail, 0, tail + n);
    const entered = Number(syscall6(NR_IO_URING_ENTER, this.#ring, n, n, IORING_ENTER_GETEVENTS, 0, 0));
    if (entered !== n) throw new Error(`io_uring_enter submitted ${entered} of ${n} (errno ${koffi.errno()})`);
    let head = Atomics.load(this.#cqHead, 0);
    const end = Atomics.load(this.#cqTail, 0);
    if (end - head !== n) throw new Error(`io_uring: ${end - head} completions of ${n}`);
    for (; head !== end; head++) {
      const at = (head & this.#cqMask) * CQE_SIZE;
      const i = Number(this.#cqes.getBigUint64(at, true));
      if (this.#cqes.getInt32(at + 8, true) !== this.#expected[i]) throw new Error(`io_uring read ${i}: ${this.#cqes.getInt32(at + 8, true)}`);
    }
    Atomics.store(this.#cqHead, 0, head);
  };

  close(): void {
    for (const { pointer, length } of this.#maps) munmap(pointer, length);
    close(this.#ring);
  }
}

function ms(samples: number[]): string {
  const s = summarize(samples);
  return `${s.median.toFixed(2)} (${s.p10.toFixed(2)}–${s.p90.toFixed(2)})`;
}

const vcpus = Number(values.vcpus);
const runs = Number(values.runs);
process.stdout.write(`Reads of every stats image fd (memfds, not KVM fds), median ms (10th–90th percentile) of ${runs} interleaved runs\n\n`);
process.stdout.write('| fds | koffi pread, a call per fd | C loop, one FFI call | io_uring, one io_uring_enter | io_uring / koffi | io_uring / C |\n| ---: | ---: | ---: | ---: | ---: | ---: |\n');
for (const fds of values.sizes!.split(',').map(Number)) {
  const fleet = ImageFleet.create({ vms: fds / (1 + vcpus), vcpus });
  try {
    const buffer = new Uint8Array(Math.max(...fleet.sources.map((s) => s.file.table.dataSize)));
    const koffiFloor = (): void => {
      for (const { file } of fleet.sources) pread(file.fd, buffer, file.table.dataSize, file.header.dataOffset);
    };
    const c = cPreadFloor(fleet.sources);
    const batched = BatchedReads.setUp(fleet.sources);
    const steps: (() => void)[] = [koffiFloor, 'run' in c ? c.run : () => undefined, 'read' in batched ? batched.read : () => undefined];
    const times = steps.map((): number[] => []);
    for (let i = 0; i < runs + 10; i++) {
      steps.forEach((step, s) => {
        const start = performance.now();
        step();
        if (i >= 10) times[s]!.push(performance.now() - start);
      });
    }
    const [k, cTimes, b] = times.map((t) => summarize(t).median);
    const cCell = 'run' in c ? ms(times[1]!) : `n/a (${c.skipped})`;
    const bCell = 'read' in batched ? ms(times[2]!) : `n/a (${batched.unavailable})`;
    const ratio = (x: number) => ('read' in batched ? (b! / x).toFixed(2) : 'n/a');
    process.stdout.write(`| ${fds.toLocaleString('en-US')} | ${ms(times[0]!)} | ${cCell} | ${bCell} | ${ratio(k!)} | ${'run' in c ? ratio(cTimes!) : 'n/a'} |\n`);
    if ('read' in batched) batched.close();
  } finally {
    fleet.close();
  }
}
