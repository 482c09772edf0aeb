/**
 * Faults the agent meets on a real host, with the agent as users run it (the built bin): VMMs
 * killed with SIGKILL while it collects, a collector that answers too slowly, and a restart of
 * the agent while the VMs keep running. (A collector that is down and comes back, and SIGTERM
 * during an export, are in test/agent/agent.test.ts.)
 */
import { readdirSync, readlinkSync } from 'node:fs';
import { type IncomingMessage, type ServerResponse, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, expect, it } from 'vitest';
import { type AgentProcess, LocalCollector, type MetricsRequest, metricsOf, pointValue, startAgentProcess } from '../../examples/local-collector/collector.js';
import { describeKvm } from '../helpers/kvm.js';
import { type TinyVmm, startTinyVmm } from '../helpers/processes.js';

let agent: AgentProcess | undefined;
const vmms: TinyVmm[] = [];
afterEach(async () => {
  await agent?.stop('SIGKILL');
  agent = undefined;
  for (const vmm of vmms.splice(0)) await vmm.stop();
});

/** KVM stats fds the agent process holds, by its /proc/PID/fd links. */
function statsFdsOf(pid: number): number {
  let count = 0;
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('anon_inode:kvm-v')) count++;
    } catch {
      // closed meanwhile
    }
  }
  return count;
}

async function until(done: () => boolean, what: string, timeoutMs = 20_000): Promise<void> {
  for (const deadline = Date.now() + timeoutMs; !done(); await sleep(20)) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${timeoutMs} ms`);
  }
}

interface LogLine {
  level: number | string;
  msg: string;
  [key: string]: unknown;
}

function logLines(text: string): LogLine[] {
  return text.split('\n').filter(Boolean).map((line) => JSON.parse(line) as LogLine);
}

describeKvm('faults (real KVM, the agent process)', () => {
  it('VMMs killed with SIGKILL while it collects every 50 ms: their fds are let go, the rest goes on', async () => {
    for (let i = 0; i < 6; i++) vmms.push(await startTinyVmm(2));
    agent = startAgentProcess([...vmms.flatMap((v) => ['--pid', String(v.pid)]), '--console', '--interval', '50', '--log-level', 'info']);
    const pid = agent.child.pid!;
    await agent.waitForLog(/"msg":"reading 18 stats fds/, 30_000);
    expect(statsFdsOf(pid)).toBe(18);
    // Kill them one by one at uneven moments, so some die in the middle of a collection.
    for (const [i, vmm] of vmms.entries()) {
      await sleep(7 + ((i * 37) % 60));
      vmm.child.kill('SIGKILL');
    }
    await until(() => statsFdsOf(pid) === 0, 'the agent closing every copy');
    for (const vmm of vmms) await agent.waitForLog(new RegExp(`"msg":"process ${vmm.pid} exited: closed its 3 stats fds"`), 10_000);
    // Still collecting and exporting (its own telemetry), and it stops cleanly.
    const lines = agent.stdout().split('\n').length;
    await until(() => agent!.stdout().split('\n').length > lines + 1, 'another export');
    expect(await agent.stop('SIGTERM')).toBe(0);
    const problems = logLines(agent.stderr()).filter((l) => l.level !== 'info' && !/exited: closed its 3 stats fds/.test(l.msg));
    expect(problems).toEqual([]);
  });

  it('a collector slower than the export timeout: one warning per export, collection goes on, data flows when it is fast again', async () => {
    let delayMs = 3_000;
    let answered = 0;
    const server = createServer((request: IncomingMessage, response: ServerResponse) => {
      request.resume();
      request.on('end', () =>
        setTimeout(() => {
          answered++;
          response.writeHead(200, { 'content-type': 'application/json' }).end('{}');
        }, delayMs),
      );
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      agent = startAgentProcess(['--demo', '1', '--endpoint', endpoint, '--protocol', 'http/json', '--interval', '1000', '--export-timeout', '500', '--log-level', 'info']);
      await agent.waitForLog(/"failures":3,/, 30_000);
      const failures = logLines(agent.stderr()).filter((l) => typeof l.failures === 'number' && /failed/.test(l.msg));
      // One line per failed export, numbered, saying what to do.
      expect(failures.map((l) => l.failures)).toEqual([1, 2, 3]);
      expect(failures[0]!.msg).toMatch(/^export to http:\/\/127\.0\.0\.1:\d+\/v1\/metrics failed: .*; retrying at the next interval: check that the collector runs and the endpoint is right$/);
      delayMs = 0;
      await agent.waitForLog(/"msg":"export to .* works again after \d+ failed exports"/, 30_000);
      expect(answered).toBeGreaterThan(0);
      expect(await agent.stop('SIGTERM')).toBe(0);
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });

  it('restarted while its VMs keep running: finds them again, and their series continue', async () => {
    const vmm = await startTinyVmm(1);
    vmms.push(vmm);
    const collector = await LocalCollector.start();
    try {
      const exitsOfVmm = (request: MetricsRequest) =>
        metricsOf(request)
          .find((m) => m.metric.name === 'kvm.vcpu.exits')
          ?.metric.sum?.dataPoints.find((p) => p.attributes['process.pid'] === vmm.pid);
      const run = async () => {
        const before = collector.requests.length;
        agent = startAgentProcess(['--scan', '--endpoint', collector.endpoint, '--interval', '600000', '--log-level', 'warn']);
        await collector.waitForRequests(before + 1, 30_000);
        expect(await agent.stop('SIGTERM')).toBe(0);
        const points = collector.requests.slice(before).map(exitsOfVmm).filter((p) => p !== undefined);
        expect(points.length).toBeGreaterThan(0);
        return points.at(-1)!;
      };
      const first = await run();
      const second = await run();
      // The start time is the VMM's own start (from /proc), the same for both agents, so a
      // backend sees one cumulative series across the restart, not a reset.
      expect(second.startTimeUnixNano).toBe(first.startTimeUnixNano);
      expect(pointValue(second)).toBeGreaterThanOrEqual(pointValue(first));
      expect(BigInt(second.timeUnixNano)).toBeGreaterThan(BigInt(first.timeUnixNano));
    } finally {
      await collector.close();
    }
  });
});
