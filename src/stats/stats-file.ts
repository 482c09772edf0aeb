/**
 * A stats fd (or a regular file holding the same bytes): header, id and descriptors read and
 * checked once at open; after that every read() is one pread of the data block into a buffer
 * allocated once, like the kernel's own read path (virt/kvm/binary_stats.c) in reverse.
 */
import { KVM_STATS_HEADER } from '../abi/kvm.js';
import { NativeError } from '../native/errors.js';
import { UnreadFileError, closeFd, closeOnThrow, openRegularFile, pread } from '../native/libc.js';
import {
  type DescriptorTable,
  type StatDescriptor,
  type StatsHeader,
  type StatsId,
  StatsImageError,
  checkBlocks,
  descriptorBlockSize,
  parseHeader,
  parseId,
  sharedDescriptorTable,
  sharedHeader,
} from './descriptors.js';
import { isExactU64, u64 } from './u64.js';

/** A read that did not return the whole data block (a truncated file, a closed fd). */
export class StatsReadError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StatsReadError';
  }
}

function readExactly(fd: number, length: number, position: number, field: string): Uint8Array {
  const bytes = new Uint8Array(length);
  const n = pread(fd, bytes, length, position);
  if (n !== length) {
    throw new StatsImageError(field, `ends early: ${n} of ${length} bytes at offset ${position}`);
  }
  return bytes;
}

/** Where open() reads a data block to check it when the file does not keep it (keepOpenData
 * false), grown to the largest block opened so far (LIMITS.maxDataSize at most). */
let checked = new Uint8Array(0);

function checkBuffer(size: number): Uint8Array {
  if (checked.byteLength < size) checked = new Uint8Array(size);
  return checked;
}

export interface StatsFileOptions {
  /** Close the fd when this StatsFile closes, or when open() fails. Default true. */
  readonly owned?: boolean;
  /**
   * Keep the data block open() reads (to check that it is all there) as `data` and `words`, the
   * values before the first read(). Default true. False for a reader of many fds that reads
   * each into a buffer of its own (readInto, as the producer does): the file's block is then
   * made only at its first read() or use (zeros until a read()), not held unread, which with
   * its ArrayBuffer and views came to about 1.4 KB per fd.
   */
  readonly keepOpenData?: boolean;
}

export class StatsFile implements StatsId {
  readonly header: StatsHeader;
  readonly table: DescriptorTable;
  readonly id: string;
  readonly target: StatsId['target'];
  readonly threadId: number;
  readonly vcpuId: number | undefined;
  /** The data block and its words: from open(), or made when first used (keepOpenData). */
  #words: Uint32Array | undefined;
  #data: Uint8Array | undefined;
  readonly #owned: boolean;
  #fd: number;
  /** header.dataOffset and table.dataSize, kept here: a reader of thousands of fds touches one
   * object per read rather than three. */
  readonly #dataOffset: number;
  readonly #dataSize: number;

  private constructor(fd: number, owned: boolean, header: StatsHeader, id: StatsId, table: DescriptorTable) {
    this.#fd = fd;
    this.#owned = owned;
    this.#dataOffset = header.dataOffset;
    this.#dataSize = table.dataSize;
    this.header = header;
    this.table = table;
    this.id = id.id;
    this.target = id.target;
    this.threadId = id.threadId;
    this.vcpuId = id.vcpuId;
  }

  /** The data block as last read (read()); before that, as open() read it (or zeros without
   * keepOpenData). */
  get data(): Uint8Array {
    if (this.#data === undefined) this.#allocate();
    return this.#data!;
  }

  /** The same bytes as host-endian 32-bit words, two per u64 value. */
  get words(): Uint32Array {
    if (this.#words === undefined) this.#allocate();
    return this.#words!;
  }

  #allocate(): void {
    // An ArrayBuffer of its own keeps the words 8-byte aligned.
    this.#words = new Uint32Array(this.#dataSize / 4);
    this.#data = new Uint8Array(this.#words.buffer);
  }

  /** Reads and checks the header, id and descriptors of `fd`. The data block is read once to
   * prove it is all there. */
  static open(fd: number, options: StatsFileOptions = {}): StatsFile {
    const owned = options.owned ?? true;
    const parse = (): StatsFile => {
      const header = sharedHeader(parseHeader(readExactly(fd, KVM_STATS_HEADER.size, 0, 'header')));
      const id = parseId(readExactly(fd, header.nameSize, header.idOffset, 'id'));
      const block = readExactly(fd, descriptorBlockSize(header), header.descOffset, 'descriptors');
      const table = sharedDescriptorTable(block, header);
      checkBlocks(header, table);
      const file = new StatsFile(fd, owned, header, id, table);
      // The selftest's last check: a pread of the whole data block returns all of it.
      const n = pread(fd, options.keepOpenData === false ? checkBuffer(table.dataSize) : file.data, table.dataSize, header.dataOffset);
      if (n !== table.dataSize) {
        throw new StatsImageError('data', `block ends early: ${n} of ${table.dataSize} bytes at offset ${header.dataOffset}`);
      }
      return file;
    };
    return owned ? closeOnThrow(fd, parse) : parse();
  }

  /** Opens a regular file holding a saved stats image (see image()). What is not a regular file,
   * or is a file of /proc or /sys, is refused before it is read (openRegularFile). */
  static openImage(path: string, options: Pick<StatsFileOptions, 'keepOpenData'> = {}): StatsFile {
    let fd: number;
    try {
      fd = openRegularFile(path);
    } catch (error) {
      if (error instanceof UnreadFileError) throw new StatsImageError('file', error.notA('a saved stats image (a regular file)'));
      throw error;
    }
    try {
      return StatsFile.open(fd, { ...options, owned: true });
    } catch (error) {
      // A regular file the kernel will not read (/proc/self/mem gives EIO): say what the input is.
      if (error instanceof NativeError) throw new StatsImageError('file', `${path} cannot be read as a stats image: ${error.call} failed with ${error.code}`);
      throw error;
    }
  }

  /** The fd; -1 once closed. */
  get fd(): number {
    return this.#fd;
  }

  get closed(): boolean {
    return this.#fd < 0;
  }

  /** One pread of the whole data block into `data`. True, as readInto. */
  read(): boolean {
    return this.#readBlock(this.data);
  }

  /**
   * One pread of the whole data block into a caller's buffer (at least table.dataSize bytes)
   * instead of `data`, which keeps its bytes. A reader of many fds can reuse one buffer that
   * stays in the CPU's cache, rather than touching each file's own. True when the buffer holds
   * the block, as every table of a source says (sources/source.ts, SourceTable); a stats fd never
   * ends by itself, so a read that fails is a StatsReadError.
   */
  readInto(buffer: Uint8Array): boolean {
    if (buffer.byteLength < this.#dataSize) {
      throw new RangeError(`readInto: the buffer has ${buffer.byteLength} bytes, but the data block of ${this.describe()} has ${this.#dataSize}: pass one of at least table.dataSize bytes`);
    }
    return this.#readBlock(buffer);
  }

  #readBlock(buffer: Uint8Array): boolean {
    const size = this.#dataSize;
    let n: number;
    try {
      n = pread(this.#fd, buffer, size, this.#dataOffset);
    } catch (error) {
      throw new StatsReadError(`reading ${this.describe()} failed: ${(error as Error).message}`, { cause: error });
    }
    if (n !== size) {
      throw new StatsReadError(`reading ${this.describe()} returned ${n} of ${size} bytes: the image is truncated; save it again`);
    }
    return true;
  }

  /** Value `bucket` of `stat` from the last read, as a double (exact up to 2^53). */
  value(stat: StatDescriptor, bucket = 0): number {
    return u64(this.words, (stat.offset >>> 2) + bucket * 2);
  }

  /** Whether value(stat, bucket) is exact; false only above 2^53. */
  isExact(stat: StatDescriptor, bucket = 0): boolean {
    return isExactU64(this.words, (stat.offset >>> 2) + bucket * 2);
  }

  /** The exact value: a number up to 2^53, a bigint above. */
  exactValue(stat: StatDescriptor, bucket = 0): number | bigint {
    if (this.isExact(stat, bucket)) return this.value(stat, bucket);
    const word = (stat.offset >>> 2) + bucket * 2;
    return (BigInt(this.words[word + 1]!) << 32n) | BigInt(this.words[word]!);
  }

  /** The whole image (header, id, descriptors, data) as one pread, for `read --save`. */
  image(): Uint8Array {
    const h = this.header;
    const end = Math.max(
      KVM_STATS_HEADER.size,
      h.idOffset + h.nameSize,
      h.descOffset + descriptorBlockSize(h),
      h.dataOffset + this.table.dataSize,
    );
    return readExactly(this.#fd, end, 0, 'image');
  }

  describe(): string {
    return `stats fd ${this.#fd} (${this.id})`;
  }

  close(): void {
    if (this.#owned) closeFd(this.#fd);
    this.#fd = -1;
  }
}
