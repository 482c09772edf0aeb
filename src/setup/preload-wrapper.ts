/**
 * An emulator wrapper for the preload helper: a shell script that puts the helper into
 * LD_PRELOAD (and any other variables, such as the helper's socket) and execs the real VMM.
 * libvirt runs it as the domain's `<emulator>`, so the helper is loaded without
 * `<qemu:commandline>`, which marks a domain "tainted: custom-argv". The exec keeps the process
 * (pid, /proc/PID/exe, QEMU's -pidfile) exactly what it would be without the wrapper.
 */
import { accessSync, chmodSync, constants, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { delimiter, isAbsolute, join } from 'node:path';

export interface PreloadWrapperOptions {
  /** The preload helper's path (absolute): best its stable link, so a rebuild needs no new wrapper. */
  readonly preload: string;
  /** The VMM to exec (absolute path). */
  readonly emulator: string;
  /** More variables to set, e.g. the helper's hand-over socket. */
  readonly env?: Readonly<Record<string, string>>;
}

/** One shell word: single quotes, with each ' written as '\''. */
function shellQuote(value: string): string {
  return `'${value.replaceAll("'", `'\\''`)}'`;
}

const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** The script's text. A preload already in the environment is kept, after the helper. */
export function preloadWrapperScript(options: PreloadWrapperOptions): string {
  for (const [what, path] of [['preload helper', options.preload], ['emulator', options.emulator]] as const) {
    if (!isAbsolute(path)) throw new Error(`the ${what} path ${path} is not absolute: libvirt starts the emulator with its own working directory and PATH`);
  }
  const lines = [
    '#!/bin/sh',
    '# Written by `kvm-stats-otel helper wrapper`: runs the VMM below with the kvm-stats-otel preload',
    '# helper, so it keeps a KVM stats fd per VM and vCPU. Use it as a libvirt domain\'s <emulator>.',
    `LD_PRELOAD=${shellQuote(options.preload)}\${LD_PRELOAD:+" $LD_PRELOAD"}`,
    'export LD_PRELOAD',
  ];
  for (const [name, value] of Object.entries(options.env ?? {})) {
    if (!NAME.test(name)) throw new Error(`${JSON.stringify(name)} is not an environment variable name`);
    lines.push(`${name}=${shellQuote(value)}`, `export ${name}`);
  }
  lines.push(`exec ${shellQuote(options.emulator)} "$@"`, '');
  return lines.join('\n');
}

/**
 * Writes the script to `path` (mode 0755: libvirt runs QEMU as its own user), through a
 * temporary file and a rename, so a VM starting meanwhile never runs half a script.
 */
export function writePreloadWrapper(path: string, options: PreloadWrapperOptions): void {
  for (const [what, file] of [['preload helper', options.preload], ['emulator', options.emulator]] as const) {
    try {
      statSync(file);
    } catch (error) {
      throw new Error(`the ${what} ${file} cannot be found (${(error as NodeJS.ErrnoException).code}): give its absolute path`);
    }
  }
  const text = preloadWrapperScript(options);
  const temporary = `${path}.${process.pid}.tmp`;
  try {
    writeFileSync(temporary, text);
    chmodSync(temporary, 0o755); // whatever the umask
    renameSync(temporary, path);
  } catch (error) {
    rmSync(temporary, { force: true });
    throw new Error(`writing the wrapper ${path} failed with ${(error as NodeJS.ErrnoException).code}: pick a folder you can write`);
  }
}

/** `name` as an absolute path: itself if it has a slash, else the first executable of that name on PATH. */
export function findExecutable(name: string, path: string = process.env.PATH ?? ''): string | undefined {
  if (name.includes('/')) return isAbsolute(name) ? name : undefined;
  for (const dir of path.split(delimiter)) {
    if (!isAbsolute(dir)) continue;
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      if (statSync(candidate).isFile()) return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}
