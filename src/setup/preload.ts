/**
 * The preload helper (preload-helper/kvm-stats-preload.c), compiled with the system C compiler
 * into a cache folder. The file name carries a hash of the source and the compile command, so a
 * changed source or compiler builds a new file and an old one is never loaded by mistake.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, readlinkSync, renameSync, rmSync, symlinkSync } from 'node:fs';
import { homedir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The folder to build into cannot be made: another folder is needed. */
export class HelperDirError extends Error {
  constructor(
    message: string,
    readonly dir: string,
  ) {
    super(message);
    this.name = 'HelperDirError';
  }
}

/** The environment variable that tells the helper where the hand-over receiver listens. */
export const PRELOAD_SOCKET_ENV = 'KVM_STATS_OTEL_SOCKET';

/** Shipped with the package (see package.json "files"): from src/sources or dist/sources alike. */
export const PRELOAD_SOURCE = fileURLToPath(new URL('../../preload-helper/kvm-stats-preload.c', import.meta.url));

const FLAGS = ['-shared', '-fPIC', '-O2', '-Wall', '-Wextra'];
const LIBS = ['-ldl', '-pthread'];

function compiler(): string {
  return process.env.CC || 'cc';
}

/** $XDG_CACHE_HOME/kvm-stats-otel, else ~/.cache/kvm-stats-otel. */
export function defaultHelperDir(): string {
  return join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'kvm-stats-otel');
}

/** Where the helper for the current source and compiler lives (built or not). */
export function preloadHelperPath(dir: string = defaultHelperDir()): string {
  let source: Buffer;
  try {
    source = readFileSync(PRELOAD_SOURCE);
  } catch (error) {
    throw new Error(`reading the helper's source ${PRELOAD_SOURCE} failed (${(error as NodeJS.ErrnoException).code}): reinstall kvm-stats-otel`);
  }
  const hash = createHash('sha256').update(source).update(JSON.stringify([compiler(), FLAGS, LIBS, process.arch])).digest('hex');
  return join(resolve(dir), `libkvm-stats-preload-${hash.slice(0, 12)}.so`);
}

/** A name that stays the same across builds (libvirt's XML names it), a link to the latest build. */
export const PRELOAD_LINK_NAME = 'libkvm-stats-preload.so';

/**
 * Compiles the helper unless the file for this source is already there; returns its path, and
 * points PRELOAD_LINK_NAME in the same folder at it. The library is written under a temporary
 * name and renamed, so a concurrent build or a VMM starting meanwhile never sees half a file.
 * Folder and file are world-readable: a VMM often runs as another user (libvirt's qemu user).
 */
export function buildPreloadHelper(dir: string = defaultHelperDir(), force = false): string {
  const path = preloadHelperPath(dir);
  if (!existsSync(path) || force) compile(dir, path);
  const link = join(resolve(dir), PRELOAD_LINK_NAME);
  if (linkTarget(link) !== basename(path)) {
    const temporary = `${link}.${process.pid}.tmp`;
    rmSync(temporary, { force: true });
    symlinkSync(basename(path), temporary);
    renameSync(temporary, link);
  }
  return path;
}

function linkTarget(link: string): string | undefined {
  try {
    return readlinkSync(link);
  } catch {
    return undefined; // missing, or not a link
  }
}

function compile(dir: string, path: string): void {
  try {
    mkdirSync(resolve(dir), { recursive: true, mode: 0o755 });
  } catch (error) {
    throw new HelperDirError(`creating ${dir} for the preload helper failed with ${(error as NodeJS.ErrnoException).code}: pick a folder you can write`, dir);
  }
  const temporary = `${path}.${process.pid}.tmp`;
  try {
    execFileSync(compiler(), [...FLAGS, '-o', temporary, PRELOAD_SOURCE, ...LIBS], { stdio: ['ignore', 'pipe', 'pipe'] });
    chmodSync(temporary, 0o755);
    renameSync(temporary, path);
  } catch (error) {
    rmSync(temporary, { force: true });
    const { code, stderr } = error as NodeJS.ErrnoException & { stderr?: Buffer };
    if (code === 'ENOENT') {
      throw new Error(`building the preload helper needs a C compiler, and ${compiler()} was not found: install gcc and libc6-dev (or set CC)`);
    }
    const detail = stderr?.toString().trim().split('\n').slice(0, 3).join(' / ') || (error as Error).message;
    throw new Error(`compiling ${PRELOAD_SOURCE} with ${compiler()} failed: ${detail}; check that the kernel headers (linux-libc-dev) are installed`);
  }
}
