/** Child processes for tests: a stand-in VMM, and TypeScript fixtures run through tsx. */
import { type ChildProcess, type SpawnOptions, execFileSync, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, cpSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { PRELOAD_SOCKET_ENV, buildPreloadHelper } from '../../src/setup/preload.js';

export const ROOT = join(import.meta.dirname, '..', '..');
export const FIXTURES = join(ROOT, 'test', 'fixtures');

/** The built command line, as package.json's bin names it. */
export const BIN = join(ROOT, 'dist', 'cli', 'main.js');

/** What a run of the built command line said. */
export interface BinResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs the built command line with `args` (in ROOT; 60 s at most by default) and waits for it. */
export function runBin(args: readonly string[], options: { timeoutMs?: number; env?: Record<string, string> } = {}): BinResult {
  const env = options.env ? { ...process.env, ...options.env } : process.env;
  const result = spawnSync(process.execPath, [BIN, ...args], { cwd: ROOT, encoding: 'utf8', timeout: options.timeoutMs ?? 60_000, env });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

/** node --import tsx FIXTURE ARGS */
export function fixtureCommand(fixture: string, args: readonly string[] = []): string[] {
  return [process.execPath, '--import', 'tsx', join(FIXTURES, fixture), ...args];
}

export interface ChildVmm {
  readonly child: ChildProcess;
  readonly pid: number;
  stop(): Promise<void>;
}

/** Starts test/fixtures/vmm.ts and waits until its VM exists. */
export async function startVmm(args: readonly string[] = []): Promise<ChildVmm> {
  const [command, ...rest] = fixtureCommand('vmm.ts', args);
  const child = spawn(command!, rest, { cwd: ROOT, stdio: ['pipe', 'pipe', 'inherit'] });
  let output = '';
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes('ready')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`vmm fixture exited with ${code} before its VM was ready`)));
  });
  return {
    child,
    pid: child.pid!,
    async stop() {
      if (child.exitCode !== null) return;
      const exited = once(child, 'exit');
      child.stdin!.end();
      await exited;
    },
  };
}

/**
 * A copy of the built package (dist/, koffi and a fixture) in a world-readable folder, so an
 * unprivileged user can run it wherever the checkout lives (CI clones under /root).
 * Returns the path of the copied fixture. `dependencies` are more node_modules folders the fixture
 * imports (e.g. '@opentelemetry').
 */
export function unprivilegedCopy(fixture: string, dependencies: readonly string[] = []): string {
  const dir = mkdtempSync(join(tmpdir(), 'kvm-stats-unprivileged-'));
  chmodSync(dir, 0o755);
  cpSync(join(ROOT, 'package.json'), join(dir, 'package.json'));
  cpSync(join(ROOT, 'dist'), join(dir, 'dist'), { recursive: true });
  // koffi and its native build (a platform package such as @koromix/koffi-linux-x64).
  for (const dependency of ['koffi', '@koromix', ...dependencies]) {
    cpSync(join(ROOT, 'node_modules', dependency), join(dir, 'node_modules', dependency), { recursive: true });
  }
  cpSync(join(FIXTURES, fixture), join(dir, fixture));
  return join(dir, fixture);
}

/**
 * The package as installed (package.json, dist/, node_modules/) in a world-readable folder, so
 * an unprivileged user can run the real bin wherever the checkout lives. Returns the folder.
 */
export function packageCopy(): string {
  const dir = mkdtempSync(join(tmpdir(), 'kvm-stats-package-'));
  chmodSync(dir, 0o755);
  for (const entry of ['package.json', 'dist', 'node_modules']) cpSync(join(ROOT, entry), join(dir, entry), { recursive: true });
  return dir;
}

/** setpriv arguments that run a command as nobody:nogroup with no supplementary groups. */
export const AS_NOBODY = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'];

/**
 * A child that answers each line written to its stdin with one JSON line on stdout (its first
 * line comes unasked, once it is ready), and exits when its stdin closes.
 */
export class JsonLineChild<T = Record<string, unknown>> {
  readonly #queued: string[] = [];
  readonly #waiting: ((line: string) => void)[] = [];
  readonly #exited: Promise<never>;

  private constructor(readonly child: ChildProcess, readonly name: string) {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const waiter = this.#waiting.shift();
      if (waiter) waiter(line);
      else this.#queued.push(line);
    });
    let stderr = '';
    child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    this.#exited = once(child, 'exit').then(([code, signal]) => {
      throw new Error(`${name} exited (${code ?? signal}) before it answered: ${stderr.trim() || 'no output'}`);
    });
    this.#exited.catch(() => undefined);
  }

  /** Starts `command` and waits for its first line. */
  static async start<T = Record<string, unknown>>(command: readonly string[], name: string, options: SpawnOptions = {}): Promise<{ child: JsonLineChild<T>; first: T }> {
    const [file, ...args] = command;
    const child = new JsonLineChild<T>(spawn(file!, args, { cwd: ROOT, ...options, stdio: ['pipe', 'pipe', 'pipe'] }), name);
    return { child, first: await child.#next() };
  }

  get pid(): number {
    return this.child.pid!;
  }

  #next(): Promise<T> {
    const line = this.#queued.shift();
    const next = line !== undefined ? Promise.resolve(line) : new Promise<string>((resolve) => this.#waiting.push(resolve));
    return Promise.race([next, this.#exited]).then((text) => JSON.parse(text) as T);
  }

  /** Writes one line and resolves with the answer. */
  request(line = ''): Promise<T> {
    this.child.stdin!.write(`${line}\n`);
    return this.#next();
  }

  /** Closes its stdin and waits for it to exit. */
  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = once(this.child, 'exit');
    this.child.stdin!.end();
    await exited;
  }
}

/** C fixtures compiled, by their source and flags, once per process. */
const compiled = new Map<string, string>();

/** test/fixtures/SOURCE compiled with `flags` (-shared -fPIC for a library to preload), once per
 * process; returns the binary's path. */
export function compiledFixture(source: string, flags: readonly string[] = []): string {
  const key = `${source} ${flags.join(' ')}`;
  let binary = compiled.get(key);
  if (!binary) {
    const shared = flags.includes('-shared');
    const dir = mkdtempSync(join(tmpdir(), 'kvm-fixture-'));
    chmodSync(dir, 0o755); // for tests that run it as another user
    binary = join(dir, source.replace(/\.c$/, shared ? '.so' : ''));
    execFileSync('cc', ['-O2', '-o', binary, join(FIXTURES, source), ...flags]);
    compiled.set(key, binary);
  }
  return binary;
}

/** tiny-vmm (test/fixtures/tiny-vmm.c) compiled, and the preload helper built, once per process. */
let tinyTools: { binary: string; helper: string } | undefined;
export function tinyVmmTools(): { binary: string; helper: string } {
  if (!tinyTools) {
    const dir = mkdtempSync(join(tmpdir(), 'kvm-tiny-vmm-'));
    const binary = join(dir, 'tiny-vmm');
    execFileSync('cc', ['-O2', '-o', binary, join(FIXTURES, 'tiny-vmm.c')]);
    tinyTools = { binary, helper: buildPreloadHelper(join(dir, 'helper')) };
  }
  return tinyTools;
}

export interface TinyVmm {
  readonly pid: number;
  readonly child: ChildProcess;
  /** Closes its stdin and waits for it to exit. */
  stop(): Promise<void>;
}

/**
 * Starts tiny-vmm with VCPUS vCPUs and the preload helper, so it holds stats fds to scan;
 * with `socket`, the helper also hands them over there. Resolves once the vCPUs exist.
 */
export async function startTinyVmm(vcpus: number, socket?: string): Promise<TinyVmm> {
  const { binary, helper } = tinyVmmTools();
  const child = spawn(binary, [String(vcpus)], {
    env: { ...process.env, LD_PRELOAD: helper, ...(socket ? { [PRELOAD_SOCKET_ENV]: socket } : {}) },
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const exited = once(child, 'exit');
  const lines = createInterface({ input: child.stdout! });
  const [line] = (await Promise.race([once(lines, 'line'), exited.then(() => ['exited'])])) as string[];
  if (line !== 'ready') throw new Error(`tiny-vmm did not start: ${line}`);
  return {
    pid: child.pid!,
    child,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.stdin!.end();
      await exited;
    },
  };
}

/** test/fixtures/scan-vmm.ts, a stand-in VMM (a real KVM VM in another process) whose every
 * command answers with the stats fds it holds afterwards. */
export type StandInVmm = JsonLineChild<{ statsFds: Record<string, number> }> & { send(command: string): Promise<Record<string, number>> };

/** Starts a stand-in VMM; the caller stops it. */
export async function startStandInVmm(args: string[] = []): Promise<StandInVmm> {
  const { child } = await JsonLineChild.start<{ statsFds: Record<string, number> }>(fixtureCommand('scan-vmm.ts', args), 'scan-vmm fixture');
  return Object.assign(child, { send: async (command: string) => (await child.request(command)).statsFds });
}
