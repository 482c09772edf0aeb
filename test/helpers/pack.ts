/**
 * The package as a user gets it: a clean clone of this repository's HEAD, `npm ci` (whose
 * `prepare` builds dist/) and `npm pack`. Made once per commit and kept under the OS temp dir
 * (the clone without its node_modules, and the tarball), so the test files that need it share
 * one; a lock keeps two test files from making it at once.
 *
 * Also what dist/ imports, found by parsing its files (TypeScript's preProcessFile), and how that
 * compares with what package.json declares.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import ts from 'typescript';
import { ROOT } from './processes.js';

export interface Packed {
  /** The commit packed. */
  readonly commit: string;
  /** A clean clone of it (no node_modules, no dist/), for installs from its git URL. */
  readonly clone: string;
  /** The tarball `npm pack` made there. */
  readonly tarball: string;
}

const run = (command: string, args: readonly string[], cwd: string): string =>
  execFileSync(command, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, npm_config_audit: 'false', npm_config_fund: 'false', npm_config_update_notifier: 'false' } });

/** Uncommitted changes, which a clean clone does not have (the tests then test HEAD). */
export function uncommittedChanges(): string {
  return run('git', ['status', '--porcelain', '--untracked-files=no'], ROOT).trim();
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Clone, npm ci, npm pack: at most once per commit on this machine. */
export async function packFromCleanClone(): Promise<Packed> {
  const commit = run('git', ['rev-parse', 'HEAD'], ROOT).trim();
  const dir = join(tmpdir(), `kvm-stats-otel-pack-${commit.slice(0, 16)}`);
  const done = join(dir, 'packed.json');
  const lock = `${dir}.lock`;
  for (let waited = 0; !existsSync(done); waited++) {
    try {
      mkdirSync(lock);
    } catch {
      // Another test file is making it; a lock whose maker is gone is taken over.
      const holder = Number(readFileSync(join(lock, 'pid'), 'utf8').trim() || 0);
      if (holder > 0 && !alive(holder)) rmSync(lock, { recursive: true, force: true });
      if (waited > 600) throw new Error(`${lock} is held for more than 10 minutes: remove it if no test runs`);
      await sleep(1000);
      continue;
    }
    try {
      writeFileSync(join(lock, 'pid'), String(process.pid));
      const work = `${dir}.${process.pid}`;
      rmSync(work, { recursive: true, force: true });
      mkdirSync(work, { recursive: true });
      const clone = join(work, 'clone');
      run('git', ['clone', '--quiet', '--no-hardlinks', ROOT, clone], work);
      run('git', ['checkout', '--quiet', commit], clone);
      run('npm', ['ci'], clone);
      const tarballName = run('npm', ['pack', '--silent', '--pack-destination', work], clone).trim().split('\n').pop()!;
      // The clone is only a git URL from now on: as it was cloned, without what npm ci made.
      run('git', ['clean', '-fdxq'], clone);
      writeFileSync(join(work, 'packed.json'), JSON.stringify({ commit, tarball: tarballName }));
      rmSync(dir, { recursive: true, force: true });
      renameSync(work, dir);
    } finally {
      rmSync(lock, { recursive: true, force: true });
    }
  }
  const { tarball } = JSON.parse(readFileSync(done, 'utf8')) as { tarball: string };
  return { commit, clone: join(dir, 'clone'), tarball: join(dir, tarball) };
}

/** A package's name from an import specifier: "@scope/name/sub" -> "@scope/name", "name/sub" -> "name". */
export function packageOf(specifier: string): string | undefined {
  if (specifier.startsWith('.') || specifier.startsWith('/') || specifier.startsWith('node:')) return undefined;
  const parts = specifier.split('/');
  const name = specifier.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0]!;
  return builtinModules.includes(name) ? undefined : name;
}

export interface DistImports {
  /** Packages the JavaScript imports or requires (static, dynamic, require). */
  readonly runtime: ReadonlySet<string>;
  /** Packages the declaration files name. */
  readonly types: ReadonlySet<string>;
}

/** Every package the files under `dist` import, by parsing them. */
export function distImports(dist: string): DistImports {
  const runtime = new Set<string>();
  const types = new Set<string>();
  const walk = (dir: string): void => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.name.endsWith('.d.ts') || entry.name.endsWith('.js')) {
        const info = ts.preProcessFile(readFileSync(path, 'utf8'), true, true);
        const into = entry.name.endsWith('.d.ts') ? types : runtime;
        for (const file of [...info.importedFiles, ...info.typeReferenceDirectives]) {
          const name = packageOf(file.fileName);
          // `/// <reference types="node" />`: Node's own types, which a TypeScript user has.
          if (name !== undefined && name !== 'node') into.add(name);
        }
      }
    }
  };
  walk(dist);
  return { runtime, types };
}

export interface DependencyMismatch {
  /** Imported at run time but neither a dependency nor a peer dependency. */
  readonly undeclared: string[];
  /** Declared (dependency or peer) but never imported at run time. */
  readonly unused: string[];
  /** Named by the declaration files but not declared: a TypeScript user's types would break. */
  readonly typesUndeclared: string[];
}

export interface PackageManifest {
  dependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
}

/** How dist's imports and the manifest differ; all three lists empty when they agree. */
export function dependencyMismatch(imports: DistImports, manifest: PackageManifest): DependencyMismatch {
  const declared = new Set([...Object.keys(manifest.dependencies ?? {}), ...Object.keys(manifest.peerDependencies ?? {})]);
  return {
    undeclared: [...imports.runtime].filter((name) => !declared.has(name)).sort(),
    unused: [...declared].filter((name) => !imports.runtime.has(name)).sort(),
    typesUndeclared: [...imports.types].filter((name) => !declared.has(name)).sort(),
  };
}
