/**
 * Saved stats: raw images (the bytes of a stats fd written to a regular file by `read --save`,
 * with the owner's identity in a file beside it) read back through the same reader, and
 * recordings (recording.ts), replayed in a loop (replay.ts). For trying things without
 * /dev/kvm, for tests on every machine, and for bug reports.
 */
import { StatsFile } from '../stats/stats-file.js';
import { isRecordingFile, readIdentity, readRecording, savedSource } from './recording.js';
import { RecordingReplay, recordingOrigin } from './replay.js';
import type { StatsSource } from './source.js';

/** A raw image, with the identity saved beside it (NAME.kvmstats.json) where there is one. */
export function openImageSource(path: string): StatsSource {
  // A source's file is read by the producer into its own buffer (readInto): no block of its own.
  const file = StatsFile.openImage(path, { keepOpenData: false });
  try {
    const identity = readIdentity(path);
    if (identity !== undefined && identity.id !== file.id) {
      throw new Error(`the identity file beside ${path} is for ${identity.id}, but the image is ${file.id}: save them again together`);
    }
    return savedSource(file, identity ?? {}, identity?.vcpuIndex, identity?.startTimeMs ?? Date.now(), path);
  } catch (error) {
    file.close();
    throw error;
  }
}

/** A file name for a source's image: "kvm-1234.vm.kvmstats", "kvm-1234.vcpu-0.kvmstats". */
export function imageFileName(source: StatsSource): string {
  const file = source.file;
  const who = file.target === 'vcpu' ? `vcpu-${file.vcpuId}` : 'vm';
  return `kvm-${source.pid ?? file.threadId}${source.vmName ? `-${source.vmName.replace(/[^A-Za-z0-9_.-]/g, '_')}` : ''}.${who}.kvmstats`;
}

/** What a saved file gives: its sources now, and a way to close them. */
export interface SavedStats {
  /** "image PATH", or "recording PATH (synthetic stand-in ...)". */
  readonly description: string;
  /** The sources as they stand now (a recording's data brought up to date first). */
  sources(): readonly StatsSource[];
  close(): void;
}

export interface OpenSavedOptions {
  /** For a recording: its clock, ms since the epoch (default Date.now). */
  readonly clock?: () => number;
}

/** A raw image's one source. A class rather than closures: an agent may hold 10,000 of these
 * (one per `--file`), and a closure each for sources() and close() with their context came to
 * about 200 bytes per image. */
class SavedImage implements SavedStats {
  readonly #sources: readonly StatsSource[];

  constructor(source: StatsSource) {
    this.#sources = [source];
  }

  /** Made when asked (logs): kept, it would be one more string per image. */
  get description(): string {
    return `image ${this.#sources[0]!.origin}`;
  }

  sources(): readonly StatsSource[] {
    return this.#sources;
  }

  close(): void {
    this.#sources[0]!.file.close();
  }
}

/** Opens a raw image (the same values every time) or a recording (replayed in a loop at its
 * pace; a timer keeps it moving for holders of its sources who do not ask again). */
export function openSaved(path: string, options: OpenSavedOptions = {}): SavedStats {
  if (!isRecordingFile(path)) return new SavedImage(openImageSource(path));
  const recording = readRecording(path);
  const replay = RecordingReplay.open(recording, { origin: `recording ${path}`, ...(options.clock ? { clock: options.clock } : {}) });
  const step = replay.stepMs;
  const timer = Number.isFinite(step) ? setInterval(() => replay.sync(), Math.min(60_000, Math.max(100, step))).unref() : undefined;
  return {
    description: recordingOrigin(recording, `recording ${path}`),
    sources: () => {
      replay.sync();
      return replay.sources;
    },
    close: () => {
      clearInterval(timer);
      replay.close();
    },
  };
}
