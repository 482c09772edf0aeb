/**
 * The command line's policy where a demo VM is asked for and this host cannot make one (no
 * usable /dev/kvm: no module, no vmx/svm because the machine is itself a VM, no permission):
 * replay the recording shipped in recordings/ in its place, in a loop, and say so in one line
 * that names the cause. The library does no such thing: DemoVm.start() still throws.
 */
import { relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type KvmAvailability, kvmAvailability } from '../sources/kvm-check.js';
import { readRecording } from '../sources/recording.js';
import type { SourceOptions } from './open-sources.js';

/** recordings/demo.kvmrec.json.gz of the package: src/setup and dist/setup are both two levels
 * below its root. */
export const SHIPPED_RECORDING = fileURLToPath(new URL('../../recordings/demo.kvmrec.json.gz', import.meta.url));

/** A path as a user in `cwd` would type it: relative where it is below, else absolute. */
export function shownPath(path: string, cwd: string = process.cwd()): string {
  const rel = relative(cwd, path);
  return rel && !rel.startsWith('..') ? rel : path;
}

/** The shipped recording in a few words: its path, and whether it is a synthetic stand-in. */
export function shippedRecordingText(path: string = SHIPPED_RECORDING): string {
  const shown = shownPath(path);
  try {
    const recording = readRecording(path);
    if (recording.synthetic) return `${shown} (a synthetic stand-in made by ${recording.madeBy}, not a real VM)`;
    return `${shown} (recorded by ${recording.madeBy}${recording.host.kernel ? ` on Linux ${recording.host.kernel}` : ''})`;
  } catch (error) {
    return `${shown} (which cannot be read: ${(error as Error).message})`;
  }
}

export interface DemoFallback {
  /** What to open instead: the options without the demo VM, the recording added to --file. */
  readonly sources: SourceOptions;
  /** Why no demo VM can be made here. */
  readonly kvm: KvmAvailability & { available: false };
  /** The one line that says so: the cause, and what is replayed instead. */
  readonly notice: string;
}

/**
 * Where `options` ask for a demo VM and `check` says this host cannot make one, the sources to
 * open instead and the line that says so; undefined where no demo VM is asked for, or one can
 * be made.
 */
export function demoFallback(options: SourceOptions, check: () => KvmAvailability = kvmAvailability, recording: string = SHIPPED_RECORDING): DemoFallback | undefined {
  if (options.demo === undefined) return undefined;
  const kvm = check();
  if (kvm.available) return undefined;
  const { demo: _, ...rest } = options;
  return {
    sources: { ...rest, file: [...(rest.file ?? []), shownPath(recording)] },
    kvm,
    notice: `no KVM here: ${kvm.message}. Replaying ${shippedRecordingText(recording)} in a loop instead of a demo VM`,
  };
}
