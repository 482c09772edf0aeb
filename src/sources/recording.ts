/**
 * Recordings: the stats fds of real VMs taken several times while their guests run, with who
 * owns them, in one gzip'd JSON file (docs/recordings.md). The first snapshot of each fd is its
 * whole image (header, id, descriptors, data) as the kernel serves it; later ones are its data
 * block only, since nothing else changes for an fd's lifetime. A recording read from a file is
 * hostile until checked: its size, every field, and every image through the same parser as a
 * live fd (replay.ts opens each in a memfd). A vCPU whose thread's scheduler time was read
 * (schedstat.ts) has that thread's schedstat text at every snapshot beside its data. Also the
 * identity file that `read --save` writes beside a raw image, with the same fields.
 */
import { closeSync, fstatSync, readFileSync, readSync, renameSync, writeFileSync } from 'node:fs';
import { arch, endianness, release } from 'node:os';
import { constants, gunzipSync, gzipSync } from 'node:zlib';
import { UnreadFileError, openRegularFile } from '../native/libc.js';
import type { StatsFile } from '../stats/stats-file.js';
import { UUID } from './proc.js';
import type { StatsSource } from './source.js';

export const RECORDING_FORMAT = 'kvm-stats-otel recording';
export const IDENTITY_FORMAT = 'kvm-stats-otel image identity';
export const RECORDING_VERSION = 1;

/** Bounds that keep a hostile file from making the reader allocate much. A recording of a
 * 2-vCPU VM is a few KB; one of a thousand fds for a minute, a few MB. */
export const RECORDING_LIMITS = {
  /** Bytes of the file as stored, and of its JSON once gunzipped. */
  fileBytes: 64 << 20,
  jsonBytes: 64 << 20,
  fds: 20_000,
  snapshots: 3_600,
  /** Characters of a VM name and of the free-text fields. */
  stringLength: 256,
  textLength: 4096,
} as const;

/** Who owns a VM's fds, as the sources said it when recorded. */
export interface RecordedOwner {
  /** The process that owned the VM (not a process on the host that replays it). */
  readonly pid?: number | undefined;
  readonly vmName?: string | undefined;
  readonly vmUuid?: string | undefined;
  /** When its cumulative values started, ms since the epoch. */
  readonly startTimeMs?: number | undefined;
}

export interface RecordedFd {
  /** The kernel's id string, as in the image: "kvm-4242", "kvm-4242/vcpu-0". */
  readonly id: string;
  /** The VMM's own number of the vCPU, where it said one. */
  readonly vcpuIndex?: number | undefined;
  /** The whole image at the first snapshot. */
  readonly image: Uint8Array;
  /** The data block at each later snapshot, in order. */
  readonly data: readonly Uint8Array[];
  /** A vCPU's thread's schedstat at every snapshot, the first included, as /proc gives it
   * without its newline ("cpu_time_ns run_delay_ns timeslices"); absent where the vCPU had none. */
  readonly schedstat?: readonly string[] | undefined;
}

export interface RecordedVm extends RecordedOwner {
  readonly fds: readonly RecordedFd[];
}

export interface RecordingHost {
  /** uname's release: "6.18.44-fc-v1045". */
  readonly kernel?: string | undefined;
  /** process.arch: "x64". */
  readonly arch?: string | undefined;
  /** The CPU model, where known. */
  readonly cpu?: string | undefined;
  /** Byte order of every number in the images: "LE" or "BE". */
  readonly endianness: 'LE' | 'BE';
}

export interface Recording {
  /** What made it: "kvm-stats-otel record 0.1.0", or the script of a synthetic stand-in. */
  readonly madeBy: string;
  /** True for a stand-in made without a KVM host: not a real VM's values. */
  readonly synthetic: boolean;
  /** Free text: what was recorded and how. */
  readonly note?: string | undefined;
  readonly host: RecordingHost;
  /** When the first snapshot was taken, ms since the epoch. */
  readonly recordedAtMs: number;
  /** Each snapshot's time after the first, in ms, increasing: [0, 1000, 2000, ...]. */
  readonly snapshotsMs: readonly number[];
  readonly vms: readonly RecordedVm[];
}

/** A recording (or an identity file) that breaks the format: says which file and field. */
export class RecordingError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RecordingError';
  }
}

/** This host, as a recording states it: kernel, architecture, CPU model, byte order. */
export function thisHost(): RecordingHost {
  let cpu: string | undefined;
  try {
    cpu = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'latin1'))?.[1]?.trim();
  } catch {
    cpu = undefined;
  }
  return { kernel: release(), arch: arch(), ...(cpu ? { cpu: cpu.slice(0, RECORDING_LIMITS.stringLength) } : {}), endianness: endianness() };
}

// ---- writing ----

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

function base64(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');
}

/** The owner's fields as JSON: those known, in a fixed order. */
function ownerJson(owner: RecordedOwner): Record<string, unknown> {
  return {
    ...(owner.pid !== undefined ? { pid: owner.pid } : {}),
    ...(owner.vmName !== undefined ? { vmName: owner.vmName } : {}),
    ...(owner.vmUuid !== undefined ? { vmUuid: owner.vmUuid } : {}),
    ...(owner.startTimeMs !== undefined ? { startTime: iso(owner.startTimeMs) } : {}),
  };
}

/** The recording as the JSON text stored (before gzip): one field per line, so that a
 * gunzipped recording reads and diffs. */
export function recordingJson(recording: Recording): string {
  const json = {
    format: RECORDING_FORMAT,
    version: RECORDING_VERSION,
    madeBy: recording.madeBy,
    synthetic: recording.synthetic,
    ...(recording.note !== undefined ? { note: recording.note } : {}),
    host: recording.host,
    recordedAt: iso(recording.recordedAtMs),
    snapshotsMs: recording.snapshotsMs,
    vms: recording.vms.map((vm) => ({
      ...ownerJson(vm),
      fds: vm.fds.map((fd) => ({
        id: fd.id,
        ...(fd.vcpuIndex !== undefined ? { vcpuIndex: fd.vcpuIndex } : {}),
        image: base64(fd.image),
        data: fd.data.map(base64),
        ...(fd.schedstat !== undefined ? { schedstat: fd.schedstat } : {}),
      })),
    })),
  };
  // snapshotsMs on one line: it can be long, and is read as one list.
  return `${JSON.stringify(json, null, 1).replace(/"snapshotsMs": \[[^\]]*\]/, () => `"snapshotsMs": ${JSON.stringify(recording.snapshotsMs)}`)}\n`;
}

/** The bytes of a recording file: gzip'd JSON. gzip's header carries no time or name here, so
 * the same recording gives the same bytes with the same zlib. */
export function encodeRecording(recording: Recording): Buffer {
  return gzipSync(recordingJson(recording), { level: constants.Z_BEST_COMPRESSION });
}

/** Writes the recording file: to a temporary name first, so that a reader never sees half. */
export function writeRecording(path: string, recording: Recording): number {
  const bytes = encodeRecording(recording);
  const temporary = `${path}.${process.pid}.tmp`;
  writeFileSync(temporary, bytes);
  renameSync(temporary, path);
  return bytes.byteLength;
}

/** What a source says about its owner, as a recording or identity file keeps it. */
export function ownerOf(source: StatsSource): RecordedOwner {
  return { pid: source.pid, vmName: source.vmName, vmUuid: source.vmUuid, startTimeMs: source.startTimeMs };
}

/** The identity file `read --save` writes beside a raw image (NAME.kvmstats.json). */
export function identityJson(source: StatsSource, savedAtMs: number): string {
  return `${JSON.stringify(
    {
      format: IDENTITY_FORMAT,
      version: RECORDING_VERSION,
      id: source.file.id,
      ...ownerJson(ownerOf(source)),
      ...(source.vcpuIndex !== undefined ? { vcpuIndex: source.vcpuIndex } : {}),
      savedAt: iso(savedAtMs),
      origin: source.origin,
    },
    null,
    1,
  )}\n`;
}

/** The identity file of a raw image: the image's path with ".json" added. */
export function identityPath(imagePath: string): string {
  return `${imagePath}.json`;
}

// ---- recording ----

export interface RecordOptions {
  /** Snapshots to take, at least 1 (the first is each fd's whole image). */
  readonly snapshots: number;
  /** Between snapshots, in ms. */
  readonly intervalMs: number;
  /** Goes into the recording: "kvm-stats-otel record 0.1.0". */
  readonly madeBy: string;
  readonly note?: string | undefined;
  /** Stops early (with the snapshots taken so far) when aborted. */
  readonly signal?: AbortSignal | undefined;
  /** Called after each snapshot, e.g. to say how far it got. */
  readonly onSnapshot?: ((taken: number) => void) | undefined;
}

function wait(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

/**
 * Takes `snapshots` snapshots of every source, `intervalMs` apart on the clock (a late one does
 * not push the rest): the first is each fd's whole image (one pread), the others its data block
 * (one pread each, as a collection reads it). Sources are grouped by owner, in their order.
 */
export async function recordSources(sources: readonly StatsSource[], options: RecordOptions): Promise<Recording> {
  if (sources.length === 0) throw new RecordingError('nothing to record: no stats fd is open');
  if (sources.length > RECORDING_LIMITS.fds) throw new RecordingError(`${sources.length} stats fds are more than a recording holds (${RECORDING_LIMITS.fds})`);
  if (!Number.isInteger(options.snapshots) || options.snapshots < 1 || options.snapshots > RECORDING_LIMITS.snapshots) {
    throw new RangeError(`snapshots must be a whole number from 1 to ${RECORDING_LIMITS.snapshots}, not ${options.snapshots}`);
  }
  const images: Uint8Array[] = [];
  const data: Uint8Array[][] = sources.map(() => []);
  // The vCPUs whose thread's scheduler time is read when the recording starts: theirs is
  // recorded at every snapshot too.
  const schedstats: (string[] | undefined)[] = sources.map((source) => (source.schedstat !== undefined && !source.schedstat.closed ? [] : undefined));
  const snapshotsMs: number[] = [];
  const first = Date.now();
  for (let k = 0; k < options.snapshots; k++) {
    if (k > 0) {
      await wait(first + k * options.intervalMs - Date.now(), options.signal);
      if (options.signal?.aborted) break;
    }
    snapshotsMs.push(Date.now() - first);
    sources.forEach((source, i) => {
      if (k === 0) {
        images.push(source.file.image());
      } else {
        source.file.read();
        data[i]!.push(source.file.data.slice());
      }
      const texts = schedstats[i];
      if (texts !== undefined) {
        const schedstat = source.schedstat;
        if (schedstat === undefined || !schedstat.read()) {
          throw new RecordingError(`the thread of ${source.file.id} (process ${source.pid ?? 'unknown'}) exited while recording, and its scheduler time with it: record again`);
        }
        texts.push(schedstat.values().join(' '));
      }
    });
    options.onSnapshot?.(k + 1);
  }
  const vms: { owner: RecordedOwner; fds: RecordedFd[] }[] = [];
  const byOwner = new Map<string, RecordedFd[]>();
  sources.forEach((source, i) => {
    const owner = ownerOf(source);
    const key = JSON.stringify(owner);
    let fds = byOwner.get(key);
    if (!fds) {
      byOwner.set(key, (fds = []));
      vms.push({ owner, fds });
    }
    const schedstat = schedstats[i];
    fds.push({
      id: source.file.id,
      ...(source.vcpuIndex !== undefined ? { vcpuIndex: source.vcpuIndex } : {}),
      image: images[i]!,
      data: data[i]!,
      ...(schedstat !== undefined && schedstat.length === snapshotsMs.length ? { schedstat } : {}),
    });
  });
  return {
    madeBy: options.madeBy,
    synthetic: false,
    ...(options.note !== undefined ? { note: options.note } : {}),
    host: thisHost(),
    recordedAtMs: first,
    snapshotsMs,
    vms: vms.map(({ owner, fds }) => ({ ...owner, fds })),
  };
}

// ---- reading (hostile input) ----

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Checks of one file's fields, each failure naming the file and the field. */
class Fields {
  constructor(readonly file: string) {}

  fail(field: string, problem: string): never {
    throw new RecordingError(`invalid recording ${this.file}: ${field} ${problem}`);
  }

  object(value: unknown, field: string): Json {
    if (!isObject(value)) this.fail(field, 'is not an object');
    return value;
  }

  array(value: unknown, field: string, max: number): unknown[] {
    if (!Array.isArray(value)) this.fail(field, 'is not a list');
    if (value.length > max) this.fail(field, `has ${value.length} entries, more than ${max}`);
    return value;
  }

  /** No control characters: these strings go into logs, terminals and metric attributes. A
   * free-text field (`lines`) may have line breaks. */
  string(value: unknown, field: string, max: number, lines = false): string {
    const printable = typeof value === 'string' && !/[\x00-\x1f\x7f]/.test(lines ? value.replace(/\n/g, ' ') : value);
    if (!printable || value.length === 0 || value.length > max) this.fail(field, `is not a string of 1 to ${max} printable characters`);
    return value;
  }

  optionalString(value: unknown, field: string, max: number, lines = false): string | undefined {
    return value === undefined ? undefined : this.string(value, field, max, lines);
  }

  integer(value: unknown, field: string, min: number, max: number): number {
    if (!Number.isSafeInteger(value) || (value as number) < min || (value as number) > max) this.fail(field, `is not a whole number from ${min} to ${max}`);
    return value as number;
  }

  time(value: unknown, field: string): number {
    const ms = typeof value === 'string' ? Date.parse(value) : NaN;
    if (!Number.isFinite(ms)) this.fail(field, 'is not a time (ISO 8601, as toISOString writes it)');
    return ms;
  }

  bytes(value: unknown, field: string): Uint8Array {
    if (typeof value !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(value) || value.length % 4 !== 0) this.fail(field, 'is not base64');
    return new Uint8Array(Buffer.from(value, 'base64'));
  }

  /** pid, vmName, vmUuid and startTime, each optional; `at` is where the object is ('' at the top). */
  owner(json: Json, at: string): RecordedOwner {
    const field = (name: string) => (at ? `${at}.${name}` : name);
    const pid = json.pid === undefined ? undefined : this.integer(json.pid, field('pid'), 1, 2 ** 22);
    const vmName = this.optionalString(json.vmName, field('vmName'), RECORDING_LIMITS.stringLength);
    const vmUuid = json.vmUuid === undefined ? undefined : this.string(json.vmUuid, field('vmUuid'), 36);
    if (vmUuid !== undefined && !UUID.test(vmUuid)) this.fail(field('vmUuid'), 'is not a UUID');
    const startTimeMs = json.startTime === undefined ? undefined : this.time(json.startTime, field('startTime'));
    return { pid, vmName, vmUuid: vmUuid?.toLowerCase(), startTimeMs };
  }

  /** A vCPU's schedstat texts, one per snapshot: three decimal u64 apart by one space each. */
  schedstat(value: unknown, field: string, id: string, snapshots: number): string[] {
    if (!id.includes('/vcpu-')) this.fail(field, `is on ${id}, a VM's fd: only a vCPU has a thread's scheduler time`);
    const texts = this.array(value, field, RECORDING_LIMITS.snapshots);
    if (texts.length !== snapshots) this.fail(field, `has ${texts.length} entries, but there are ${snapshots} snapshots (one each, the first included)`);
    return texts.map((text, k) => {
      const numbers = typeof text === 'string' ? /^(\d{1,20}) (\d{1,20}) (\d{1,20})$/.exec(text) : null;
      if (!numbers || numbers.slice(1).some((n) => BigInt(n) >= 1n << 64n)) this.fail(`${field}[${k}]`, 'is not three whole numbers below 2^64 apart by one space ("cpu_time_ns run_delay_ns timeslices")');
      return text as string;
    });
  }

  /** The kernel's id string, as a stats image holds it. */
  id(value: unknown, field: string): string {
    const id = this.string(value, field, 47);
    if (!/^kvm-\d+(\/vcpu-\d+)?$/.test(id)) this.fail(field, `is ${JSON.stringify(id)}, not a KVM stats id (kvm-TID or kvm-TID/vcpu-N)`);
    return id;
  }
}

/** Reads a regular file of at most `limit` bytes; anything else, or a file of /proc or /sys, is
 * refused before it is read (openRegularFile). */
function readBounded(path: string, limit: number, what: string): Buffer {
  let fd: number;
  try {
    fd = openRegularFile(path);
  } catch (error) {
    if (error instanceof UnreadFileError) throw new RecordingError(`${what} ${error.notA('a regular file')}`);
    throw error;
  }
  try {
    const stat = fstatSync(fd);
    if (stat.size > limit) throw new RecordingError(`${what} ${path} is ${stat.size} bytes, more than the limit of ${limit}`);
    const bytes = Buffer.alloc(stat.size);
    let at = 0;
    while (at < bytes.length) {
      const n = readSync(fd, bytes, at, bytes.length - at, at);
      if (n === 0) break;
      at += n;
    }
    return bytes.subarray(0, at);
  } finally {
    closeSync(fd);
  }
}

const GZIP_MAGIC = [0x1f, 0x8b];

/** Whether these first bytes are a recording's (gzip'd JSON, or JSON) rather than a raw image
 * (whose first u32, the header's flags, is 0 in every kernel so far). */
export function looksLikeRecording(head: Uint8Array): boolean {
  if (head[0] === GZIP_MAGIC[0] && head[1] === GZIP_MAGIC[1]) return true;
  const first = Buffer.from(head.buffer, head.byteOffset, head.byteLength).toString('latin1').trimStart()[0];
  return first === '{';
}

/** Whether the regular file at `path` holds a recording; false for anything else (a raw image,
 * a missing file, a FIFO, a file of /proc: nothing is read from those), which the image reader
 * then reports on. */
export function isRecordingFile(path: string): boolean {
  let fd: number;
  try {
    fd = openRegularFile(path);
  } catch {
    return false;
  }
  try {
    const head = Buffer.alloc(64);
    return looksLikeRecording(head.subarray(0, readSync(fd, head, 0, head.length, 0)));
  } catch {
    return false;
  } finally {
    closeSync(fd);
  }
}

/** The JSON text of a recording's bytes: gunzipped (bounded) where gzip'd. */
function jsonText(bytes: Uint8Array, file: string): string {
  if (bytes[0] !== GZIP_MAGIC[0] || bytes[1] !== GZIP_MAGIC[1]) {
    if (bytes.byteLength > RECORDING_LIMITS.jsonBytes) throw new RecordingError(`invalid recording ${file}: more than ${RECORDING_LIMITS.jsonBytes} bytes of JSON`);
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8');
  }
  try {
    return gunzipSync(bytes, { maxOutputLength: RECORDING_LIMITS.jsonBytes }).toString('utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ERR_BUFFER_TOO_LARGE') throw new RecordingError(`invalid recording ${file}: it unpacks to more than ${RECORDING_LIMITS.jsonBytes} bytes`);
    throw new RecordingError(`invalid recording ${file}: gzip says ${(error as Error).message}`);
  }
}

function parseJson(text: string, file: string): unknown {
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new RecordingError(`invalid recording ${file}: not JSON (${(error as Error).message})`);
  }
}

/**
 * Parses and checks a recording's bytes (gzip'd JSON, or JSON). The images are checked here for
 * their id only; replay.ts parses each as a live fd is parsed, and checks every data block's
 * size against its descriptor table.
 */
export function parseRecording(bytes: Uint8Array, file: string): Recording {
  const f = new Fields(file);
  const json = f.object(parseJson(jsonText(bytes, file), file), 'the document');
  if (json.format !== RECORDING_FORMAT) f.fail('format', `is ${JSON.stringify(json.format)}, not ${JSON.stringify(RECORDING_FORMAT)}`);
  if (json.version !== RECORDING_VERSION) f.fail('version', `is ${JSON.stringify(json.version)}: this kvm-stats-otel reads version ${RECORDING_VERSION}; a newer one may read it`);
  const madeBy = f.string(json.madeBy, 'madeBy', RECORDING_LIMITS.stringLength);
  if (typeof json.synthetic !== 'boolean') f.fail('synthetic', 'is not true or false');
  const note = f.optionalString(json.note, 'note', RECORDING_LIMITS.textLength, true);
  const hostJson = f.object(json.host, 'host');
  if (hostJson.endianness !== 'LE' && hostJson.endianness !== 'BE') f.fail('host.endianness', 'is not "LE" or "BE"');
  if (hostJson.endianness !== endianness()) {
    f.fail('host.endianness', `is ${hostJson.endianness}, but this host is ${endianness()}: the images' numbers are in the recording host's byte order`);
  }
  const host: RecordingHost = {
    kernel: f.optionalString(hostJson.kernel, 'host.kernel', RECORDING_LIMITS.stringLength),
    arch: f.optionalString(hostJson.arch, 'host.arch', RECORDING_LIMITS.stringLength),
    cpu: f.optionalString(hostJson.cpu, 'host.cpu', RECORDING_LIMITS.stringLength),
    endianness: hostJson.endianness as 'LE' | 'BE',
  };
  const recordedAtMs = f.time(json.recordedAt, 'recordedAt');
  const snapshotsMs = f.array(json.snapshotsMs, 'snapshotsMs', RECORDING_LIMITS.snapshots).map((ms, k) => f.integer(ms, `snapshotsMs[${k}]`, 0, 2 ** 40));
  if (snapshotsMs.length === 0) f.fail('snapshotsMs', 'is empty: a recording has at least one snapshot');
  if (snapshotsMs[0] !== 0) f.fail('snapshotsMs[0]', 'is not 0: times are counted from the first snapshot');
  snapshotsMs.forEach((ms, k) => k > 0 && ms <= snapshotsMs[k - 1]! && f.fail(`snapshotsMs[${k}]`, 'is not later than the snapshot before'));
  let fdCount = 0;
  const ids = new Set<string>();
  const vms = f.array(json.vms, 'vms', RECORDING_LIMITS.fds).map((vmValue, v): RecordedVm => {
    const at = `vms[${v}]`;
    const vmJson = f.object(vmValue, at);
    const owner = f.owner(vmJson, at);
    const fds = f.array(vmJson.fds, `${at}.fds`, RECORDING_LIMITS.fds).map((fdValue, i): RecordedFd => {
      const fdAt = `${at}.fds[${i}]`;
      if (++fdCount > RECORDING_LIMITS.fds) f.fail('vms', `hold more than ${RECORDING_LIMITS.fds} fds`);
      const fdJson = f.object(fdValue, fdAt);
      const id = f.id(fdJson.id, `${fdAt}.id`);
      const key = `${JSON.stringify(owner)}|${id}`;
      if (ids.has(key)) f.fail(`${fdAt}.id`, `is ${id} a second time for the same owner: its series would be written twice`);
      ids.add(key);
      const vcpuIndex = fdJson.vcpuIndex === undefined ? undefined : f.integer(fdJson.vcpuIndex, `${fdAt}.vcpuIndex`, 0, 2 ** 31);
      const image = f.bytes(fdJson.image, `${fdAt}.image`);
      const data = f.array(fdJson.data, `${fdAt}.data`, RECORDING_LIMITS.snapshots).map((block, k) => f.bytes(block, `${fdAt}.data[${k}]`));
      if (data.length !== snapshotsMs.length - 1) f.fail(`${fdAt}.data`, `has ${data.length} data blocks, but there are ${snapshotsMs.length} snapshots (the first is the image)`);
      const schedstat = fdJson.schedstat === undefined ? undefined : f.schedstat(fdJson.schedstat, `${fdAt}.schedstat`, id, snapshotsMs.length);
      return { id, ...(vcpuIndex !== undefined ? { vcpuIndex } : {}), image, data, ...(schedstat !== undefined ? { schedstat } : {}) };
    });
    if (fds.length === 0) f.fail(`${at}.fds`, 'is empty');
    return { ...owner, fds };
  });
  if (vms.length === 0) f.fail('vms', 'is empty: a recording holds at least one stats fd');
  return { madeBy, synthetic: json.synthetic as boolean, ...(note !== undefined ? { note } : {}), host, recordedAtMs, snapshotsMs, vms };
}

/** Reads and checks the recording at `path`. */
export function readRecording(path: string): Recording {
  return parseRecording(readBounded(path, RECORDING_LIMITS.fileBytes, 'recording'), path);
}

/** What an identity file says about its image. */
export interface SavedIdentity extends RecordedOwner {
  readonly id: string;
  readonly vcpuIndex?: number | undefined;
}

/** Reads and checks the identity file of a raw image, if there is one (undefined if not). */
export function readIdentity(imagePath: string): SavedIdentity | undefined {
  const path = identityPath(imagePath);
  let bytes: Buffer;
  try {
    bytes = readBounded(path, 64 * 1024, 'identity file');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  const f = new Fields(path);
  const json = f.object(parseJson(bytes.toString('utf8'), path), 'the document');
  if (json.format !== IDENTITY_FORMAT) f.fail('format', `is ${JSON.stringify(json.format)}, not ${JSON.stringify(IDENTITY_FORMAT)}`);
  if (json.version !== RECORDING_VERSION) f.fail('version', `is ${JSON.stringify(json.version)}, not ${RECORDING_VERSION}`);
  const vcpuIndex = json.vcpuIndex === undefined ? undefined : f.integer(json.vcpuIndex, 'vcpuIndex', 0, 2 ** 31);
  return { id: f.id(json.id, 'id'), ...f.owner(json, ''), ...(vcpuIndex !== undefined ? { vcpuIndex } : {}) };
}

/**
 * A source for a saved or recorded fd, its identity as saved. Not statsSource(): the pid is the
 * recorded host's, so nothing about it is looked up in this host's /proc.
 */
export function savedSource(file: StatsFile, owner: RecordedOwner, vcpuIndex: number | undefined, startTimeMs: number, origin: string): StatsSource {
  return {
    file,
    pid: owner.pid,
    vmName: owner.vmName,
    ...(owner.vmUuid !== undefined ? { vmUuid: owner.vmUuid } : {}),
    ...(vcpuIndex !== undefined && file.target === 'vcpu' ? { vcpuIndex } : {}),
    startTimeMs,
    origin,
  };
}
