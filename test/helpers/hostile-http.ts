/** test/fixtures/hostile-http.mjs, the hostile clients of an HTTP endpoint, in a process of their own. */
import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { FIXTURES } from './processes.js';

export interface HostileClients {
  readonly child: ChildProcess;
  /** What the clients did so far: neverRead, slowReadBytes, idleOpen, idleOpened, idleClosedByServer, errors. */
  stats(): Promise<Record<string, number>>;
  /** Closes its stdin and waits for it to exit (it closes every connection). */
  stop(): Promise<void>;
}

/** Starts the clients (hostile-http.mjs's flags in `args`) against 127.0.0.1:`port` and resolves
 * once they are connected; the caller stops them. */
export async function hostileHttp(port: number, args: readonly string[]): Promise<HostileClients> {
  const child = spawn(process.execPath, [join(FIXTURES, 'hostile-http.mjs'), '--port', String(port), ...args], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  const next = async () => JSON.parse((await lines.next()).value as string) as Record<string, number>;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  await next();
  return {
    child,
    stats: () => {
      child.stdin!.write('\n');
      return next();
    },
    stop: async () => {
      if (child.exitCode !== null) return;
      child.stdin!.end();
      await exited;
    },
  };
}
