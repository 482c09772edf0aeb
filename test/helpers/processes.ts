/** Child processes for tests: a stand-in VMM, and TypeScript fixtures run through tsx. */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, cpSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const ROOT = join(import.meta.dirname, '..', '..');
export const FIXTURES = join(ROOT, 'test', 'fixtures');

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
 * Returns the path of the copied fixture.
 */
export function unprivilegedCopy(fixture: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'kvm-stats-unprivileged-'));
  chmodSync(dir, 0o755);
  cpSync(join(ROOT, 'package.json'), join(dir, 'package.json'));
  cpSync(join(ROOT, 'dist'), join(dir, 'dist'), { recursive: true });
  // koffi and its native build (a platform package such as @koromix/koffi-linux-x64).
  for (const dependency of ['koffi', '@koromix']) {
    cpSync(join(ROOT, 'node_modules', dependency), join(dir, 'node_modules', dependency), { recursive: true });
  }
  cpSync(join(FIXTURES, fixture), join(dir, fixture));
  return join(dir, fixture);
}

/** setpriv arguments that run a command as nobody:nogroup with no supplementary groups. */
export const AS_NOBODY = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'];
