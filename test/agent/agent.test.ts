/**
 * The agent as users run it (the built bin) against a real OTLP receiver on loopback
 * (@elastic/mockotlpserver, examples/local-collector): exit codes, signals, an unreachable
 * collector, histograms without a sum, temporality, headers and self-telemetry; and its
 * Prometheus names as a Prometheus user meets them on a real VM: a base-units scrape passes
 * `promtool check metrics`, an exact-units one is flagged for its abbreviated units (what the
 * README says of the two modes), and every KVM series either scrape has is one `schema` (and so
 * docs/metrics.md) names for that mode, so a dashboard can be written from the docs.
 */
import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { type AddressInfo, type Socket, createServer } from 'node:net';
import { readFileSync, truncateSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { join } from 'node:path';
import { hostname } from 'node:os';
import { afterEach, describe, expect, it } from 'vitest';
import { KVM_STATS_TYPE_LOG_HIST, KVM_STATS_UNIT_SECONDS } from '../../src/abi/kvm.js';
import {
  type AgentProcess,
  LocalCollector,
  type MetricsRequest,
  freePort,
  metricsOf,
  pointValue,
  startAgentProcess,
} from '../../examples/local-collector/collector.js';
import type { UnitMode } from '../../src/otel/mapping.js';
import type { Schema } from '../../src/views/stat-reports.js';
import { buildImage, writeImage } from '../helpers/image.js';
import { describeKvm } from '../helpers/kvm.js';
import { JsonLineChild, ROOT, fixtureCommand, startVmm, runBin } from '../helpers/processes.js';

interface LogLine {
  level: string;
  msg: string;
  [key: string]: unknown;
}

function logLines(stderr: string): LogLine[] {
  return stderr.trim().split('\n').filter(Boolean).map((line) => JSON.parse(line) as LogLine);
}

function metric(request: MetricsRequest, name: string) {
  return metricsOf(request).find((m) => m.metric.name === name)?.metric;
}

let collector: LocalCollector | undefined;
let agent: AgentProcess | undefined;
afterEach(async () => {
  await agent?.stop('SIGKILL');
  await collector?.close();
  agent = collector = undefined;
});

describe('agent: bad flags and variables', () => {
  const run = (args: string[], env: Record<string, string> = {}) => runBin(['agent', ...args], { timeoutMs: 30_000, env });

  it('exits 2 with one line for a bad flag or variable, before opening anything', () => {
    const cases: [string[], Record<string, string>, RegExp][] = [
      [['--demo', '--interval', 'soon'], {}, /^kvm-stats-otel: option '--interval <ms>' argument 'soon' is invalid\. expected a whole number/],
      [['--demo', '--protocol', 'udp'], {}, /argument 'udp' is invalid\. expected http\/protobuf, http\/json or grpc/],
      [['--demo', '--prometheus', '99999'], {}, /expected PORT or HOST:PORT/],
      [['--demo', '--bogus'], {}, /unknown option '--bogus'/],
      [['--demo', '--log-level', 'loud'], {}, /Allowed choices are fatal, error/],
      [['--demo'], { OTEL_METRIC_EXPORT_INTERVAL: 'soon' }, /^kvm-stats-otel: OTEL_METRIC_EXPORT_INTERVAL="soon" is not valid: /],
      [['--demo'], { OTEL_EXPORTER_OTLP_HEADERS: 'no-equals-sign' }, /^kvm-stats-otel: OTEL_EXPORTER_OTLP_HEADERS is not valid: expected key=value pairs separated by commas, and an item has no key= part/],
      [['--demo', '--interval', '1000', '--export-timeout', '5000'], {}, /export timeout \(5000 ms\) must not be longer than the export interval \(1000 ms\)/],
      [['--demo', '--include', 'vcpu:exits,exits'], {}, /^kvm-stats-otel: option '--include <patterns>' argument 'vcpu:exits,exits' is invalid\. include pattern "exits" is not TARGET:STAT: TARGET is vm or vcpu/],
      [['--demo', '--exclude', 'kvm.vcpu.exits'], {}, /exclude pattern "kvm\.vcpu\.exits" is not TARGET:STAT \(write vcpu:exits: patterns name the kernel's stat, not the metric\)/],
      [['--demo', '--vcpu-aggregation', 'host'], {}, /argument 'host' is invalid\. Allowed choices are none, vm/],
      [[], {}, /say what to read: --demo, --pid PID, --file IMAGE, --scan or --listen PATH/],
      // A CRLF would pass start-up and then fail every export; the message names the header, not its value.
      [['--demo'], { OTEL_EXPORTER_OTLP_HEADERS: 'authorization=Bearer%20s3cr3t%0D%0AX-Evil: 1' }, /^kvm-stats-otel: OTEL_EXPORTER_OTLP_HEADERS is not valid: the value of header authorization holds a line break or another control character, which HTTP does not allow\n$/],
      [['--demo'], { OTEL_EXPORTER_OTLP_HEADERS: 'bad name=s3cr3t' }, /^kvm-stats-otel: OTEL_EXPORTER_OTLP_HEADERS is not valid: header name "bad name" is not a valid HTTP field name/],
      [['--demo', '--header', 'authorization=s3cr3t%0A'], {}, /^kvm-stats-otel: option '--header' is invalid: the value of header authorization holds a line break/],
      // An endpoint that is not a URL the agent can use is shown with its credentials masked.
      [['--demo', '--endpoint', 'ftp://a:s3cr3t@h'], {}, /^kvm-stats-otel: option '--endpoint <url>' argument 'ftp:\/\/\*\*\*@h' is invalid\. expected an http:\/\/ or https:\/\/ URL, not ftp:\n$/],
      [['--demo', '--metrics-endpoint', 'a:s3cr3t@h'], {}, /^kvm-stats-otel: option '--metrics-endpoint <url>' argument '\*\*\*@h' is invalid\. expected an http:\/\/ or https:\/\/ URL, not a:\n$/],
      [['--demo'], { OTEL_EXPORTER_OTLP_ENDPOINT: 'ftp://a:s3cr3t@h/?api_key=s3cr3t' }, /^kvm-stats-otel: OTEL_EXPORTER_OTLP_ENDPOINT="ftp:\/\/\*\*\*@h\/\?api_key=\*\*\*" is not valid: expected an http:\/\/ or https:\/\/ URL/],
      // Values HTTP cannot carry, and headers that frame the request, fail at start-up, not at every export.
      [['--demo'], { OTEL_EXPORTER_OTLP_HEADERS: 'x-token=s3cr3t%E2%82%AC' }, /^kvm-stats-otel: OTEL_EXPORTER_OTLP_HEADERS is not valid: the value of header x-token holds characters beyond Latin-1, which HTTP headers cannot carry/],
      [['--demo', '--header', 'x-token=s3cr3t\u{1F600}'], {}, /^kvm-stats-otel: option '--header' is invalid: the value of header x-token holds characters beyond Latin-1/],
      ...['Content-Length=5', 'Transfer-Encoding=chunked', 'Host=s3cr3t', 'Connection=close'].map((header): [string[], Record<string, string>, RegExp] => [
        ['--demo', '--header', header],
        {},
        new RegExp(`^kvm-stats-otel: option '--header' is invalid: header ${header.split('=')[0]} is set by the exporter and its HTTP client \\(it frames the request or says how its body is encoded\\): leave it out\n$`),
      ]),
      [['--demo'], { OTEL_EXPORTER_OTLP_METRICS_HEADERS: 'content-length=1' }, /^kvm-stats-otel: OTEL_EXPORTER_OTLP_METRICS_HEADERS is not valid: header content-length is set by the exporter/],
    ];
    for (const [args, env, message] of cases) {
      const result = run(args, env);
      const what = `${JSON.stringify(env)} agent ${args.join(' ')}`;
      expect(result.stderr, what).not.toContain('s3cr3t');
      expect(result.code, what).toBe(2);
      expect(result.stderr.trim().split('\n'), what).toHaveLength(1);
      expect(result.stderr, what).toMatch(message);
      expect(result.stdout, what).toBe('');
    }
  });

  it('exits 1 with one line when a source cannot be opened', () => {
    const result = run(['--file', '/nonexistent.kvmstats', '--log-level', 'silent']);
    expect(result.code).toBe(1);
    expect(result.stderr).toBe('kvm-stats-otel: open /nonexistent.kvmstats failed with ENOENT: check the path\n');
  });

  it('lists every flag with its variables in --help', () => {
    const help = run(['--help']).stdout;
    for (const text of ['--endpoint <url>', 'OTEL_EXPORTER_OTLP_ENDPOINT', 'OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE', '--prometheus', '--console', '--log-level']) {
      expect(help).toContain(text);
    }
  });
});

/** A vCPU image: one histogram with a companion sum (halt_wait), one without (lonely), a counter,
 * and a stat of a type this code does not know (skipped). */
const IMAGE = writeImage(
  buildImage({
    id: 'kvm-4242/vcpu-3',
    descs: [
      { name: 'exits', values: [1000] },
      { name: 'halt_wait_ns', unit: KVM_STATS_UNIT_SECONDS, exponent: -9, values: [300] },
      { name: 'halt_wait_hist', type: KVM_STATS_TYPE_LOG_HIST, unit: KVM_STATS_UNIT_SECONDS, exponent: -9, size: 4, values: [1, 2, 3, 4] },
      { name: 'lonely_hist', type: KVM_STATS_TYPE_LOG_HIST, size: 4, values: [5, 0, 0, 1] },
      { name: 'from_the_future', flags: 0xf, values: [7] },
    ],
  }),
  'agent',
);

describe('agent with a saved image (no /dev/kvm needed)', () => {
  for (const protocol of ['http/json', 'http/protobuf', 'grpc']) {
    it(`${protocol}: a histogram without a companion has no sum; one with a companion has it`, async () => {
      collector = await LocalCollector.start(0, { grpc: protocol === 'grpc' });
      const endpoint = protocol === 'grpc' ? collector.grpcEndpoint : collector.endpoint;
      agent = startAgentProcess(['--file', IMAGE, '--endpoint', endpoint, '--protocol', protocol, '--interval', '300']);
      const [request] = await collector.waitForRequests(1, 20_000);
      const lonely = metric(request!, 'kvm.vcpu.lonely_hist')!.histogram!.dataPoints[0]!;
      expect(lonely).not.toHaveProperty('sum');
      expect(lonely.bucketCounts.map(Number)).toEqual([5, 0, 0, 1]);
      expect(Number(lonely.count)).toBe(6);
      const halt = metric(request!, 'kvm.vcpu.halt_wait_hist')!.histogram!.dataPoints[0]!;
      expect(halt.sum).toBe(300);
      expect(halt.explicitBounds).toEqual([0, 1, 3]);
      expect(metric(request!, 'kvm.vcpu.from_the_future')).toBeUndefined();
      // Self-telemetry counts the skipped stat, the fd read, and no errors: the error counters
      // are there at 0 from the first collection on (an alert's rate needs a series).
      expect(pointValue(metric(request!, 'kvm_stats_otel.stats.skipped')!.gauge!.dataPoints[0]!)).toBe(1);
      expect(pointValue(metric(request!, 'kvm_stats_otel.sources.read')!.sum!.dataPoints[0]!)).toBeGreaterThanOrEqual(1);
      expect(pointValue(metric(request!, 'kvm_stats_otel.read.errors')!.sum!.dataPoints[0]!)).toBe(0);
      expect(pointValue(metric(request!, 'kvm_stats_otel.export.failures')!.sum!.dataPoints[0]!)).toBe(0);
      // The resource names the instance: through a collector it becomes the instance label.
      expect(request!.resourceMetrics[0]!.resource.attributes['service.instance.id']).toBe(hostname());
      expect(await agent.stop('SIGTERM')).toBe(0);
    });
  }

  it('sends the configured headers, service name and resource attributes, with delta temporality on request', async () => {
    collector = await LocalCollector.start();
    agent = startAgentProcess(
      ['--file', IMAGE, '--protocol', 'http/json', '--interval', '300', '--header', 'x-tenant=blue', '--temporality', 'delta'],
      {
        OTEL_EXPORTER_OTLP_ENDPOINT: collector.endpoint,
        OTEL_EXPORTER_OTLP_HEADERS: 'authorization=Bearer%20abc,x-tenant=red',
        OTEL_SERVICE_NAME: 'hypervisor-stats',
        OTEL_RESOURCE_ATTRIBUTES: 'deployment.environment=test',
      },
    );
    const requests = await collector.waitForRequests(2, 20_000);
    expect(collector.headers[0]).toMatchObject({ authorization: 'Bearer abc', 'x-tenant': 'blue' });
    const { resource } = metricsOf(requests[0]!)[0]!;
    expect(resource).toMatchObject({ 'service.name': 'hypervisor-stats', 'deployment.environment': 'test' });
    // Delta: the image's values do not change, so the second export's deltas are 0, and each
    // point starts where the previous one ended.
    const [first, second] = requests.map((r) => metric(r, 'kvm.vcpu.exits')!.sum!);
    expect(first!.aggregationTemporality).toBe(1);
    expect(pointValue(second!.dataPoints[0]!)).toBe(0);
    expect(second!.dataPoints[0]!.startTimeUnixNano).toBe(first!.dataPoints[0]!.timeUnixNano);
    expect(await agent.stop('SIGINT')).toBe(0);
  });

  it('serves Prometheus and the console beside OTLP, each reader with its own producer', async () => {
    collector = await LocalCollector.start();
    const port = await freePort();
    agent = startAgentProcess(['--file', IMAGE, '--endpoint', collector.endpoint, '--prometheus', `127.0.0.1:${port}`, '--console', '--interval', '300', '--temporality', 'delta']);
    await collector.waitForRequests(2, 20_000);
    const scrape = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    // Prometheus stays cumulative whatever OTLP uses; no _sum series for a histogram without one.
    expect(scrape).toMatch(/^kvm_vcpu_exits_total\{kvm_vcpu_id="3",otel_scope_name="kvm-stats-otel",.*\} 1000$/m);
    expect(scrape).toMatch(/^kvm_vcpu_lonely_hist_count\{.*\} 6$/m);
    expect(scrape).not.toMatch(/^kvm_vcpu_lonely_hist_sum/m);
    expect(scrape).toMatch(/^kvm_vcpu_halt_wait_hist_sum\{.*\} 300$/m);
    expect(scrape).toMatch(/^kvm_vcpu_lonely_hist_bucket\{.*le="0"\} 5$/m);
    expect(await agent.stop('SIGTERM')).toBe(0);
    const console = agent.stdout();
    expect(console).toMatch(/^# kvm-stats-otel agent: reading the KVM stats of image /m);
    expect(console).toMatch(/^kvm\.vcpu\.exits\{kvm\.vcpu\.id=3\} sum 1 \d+$/m);
    expect(console).toMatch(/^kvm\.vcpu\.lonely_hist\{kvm\.vcpu\.id=3\} histogram 1 count \d+ {2}le 0:\d+ inf:\d+$/m);
  });

  it('--log-level: debug adds the SDK\'s own diagnostics, error leaves out the warnings', async () => {
    const closed = `http://127.0.0.1:${await freePort()}`;
    agent = startAgentProcess(['--file', IMAGE, '--endpoint', closed, '--interval', '300', '--timeout', '200', '--log-level', 'debug']);
    const sdk = JSON.parse(await agent.waitForLog(/"component":"opentelemetry".*metrics export failed/, 20_000)) as LogLine;
    expect(sdk.level).toBe('debug');
    await agent.stop('SIGTERM');
    // A collector that refuses every export (400: not retried): wait until two exports have
    // failed, so the warning path has run, rather than for a fixed time a slow start outlasts.
    let requests = 0;
    const refusing = createHttpServer((request, response) => {
      request.resume();
      request.on('end', () => {
        requests++;
        response.writeHead(400).end();
      });
    }).listen(0, '127.0.0.1');
    await once(refusing, 'listening');
    try {
      agent = startAgentProcess(['--file', IMAGE, '--endpoint', `http://127.0.0.1:${(refusing.address() as AddressInfo).port}`, '--interval', '300', '--timeout', '200', '--log-level', 'error']);
      for (let waited = 0; requests < 2 && waited < 20_000; waited += 50) await new Promise((resolve) => setTimeout(resolve, 50));
      expect(requests).toBeGreaterThanOrEqual(2);
      expect(await agent.stop('SIGTERM')).toBe(0);
      expect(agent.stderr()).toBe('');
    } finally {
      refusing.close();
    }
  });

  it('a collector that never answers: SIGTERM still exits 0 within the export timeout; a second signal exits at once', async () => {
    // Accepts connections and never answers them.
    const sockets: Socket[] = [];
    const blackhole = createServer((socket) => void sockets.push(socket)).listen(0, '127.0.0.1');
    await once(blackhole, 'listening');
    const url = `http://127.0.0.1:${(blackhole.address() as AddressInfo).port}`;
    try {
      agent = startAgentProcess(['--file', IMAGE, '--endpoint', url, '--interval', '60000', '--export-timeout', '1500']);
      await agent.waitForLog(/"msg":"reading 1 stats fds/, 20_000);
      expect(await agent.stop('SIGTERM')).toBe(0);
      const lines = logLines(agent.stderr());
      expect(lines).toContainEqual(expect.objectContaining({ level: 'warn', msg: 'the last export did not finish within the export timeout (1500 ms); exiting without it' }));
      expect(lines).toContainEqual(expect.objectContaining({ msg: 'stopped: every stats fd closed', openKvmFds: 0 }));

      agent = startAgentProcess(['--file', IMAGE, '--endpoint', url, '--interval', '60000', '--export-timeout', '60000', '--timeout', '60000']);
      await agent.waitForLog(/"msg":"reading 1 stats fds/, 20_000);
      agent.child.kill('SIGTERM');
      await agent.waitForLog(/SIGTERM: one last collection and export/, 20_000);
      expect(await agent.stop('SIGINT')).toBe(1);
      expect(logLines(agent.stderr()).at(-1)).toMatchObject({ level: 'warn', msg: 'SIGINT again: exiting without waiting for the last export' });
    } finally {
      for (const socket of sockets) socket.destroy();
      blackhole.close();
    }
  });

  it('never shows a token in the endpoint\'s query string or userinfo: not in the banner, the start-up line or a failed export', async () => {
    const port = await freePort();
    agent = startAgentProcess(['--file', IMAGE, '--console', '--otlp', '--endpoint', `http://bob:s3cr3t@127.0.0.1:${port}/v1/metrics?api_key=s3cr3t&tenant=s3cr3t`, '--metrics-endpoint', `http://127.0.0.1:${port}/v1/metrics?api_key=s3cr3t`, '--interval', '300', '--timeout', '200']);
    await agent.waitForLog(/"failures":2,/, 30_000);
    expect(await agent.stop('SIGTERM')).toBe(0);
    expect(agent.stdout() + agent.stderr()).not.toContain('s3cr3t');
    expect(agent.stdout()).toContain(`OTLP http/protobuf to http://127.0.0.1:${port}/v1/metrics?api_key=***`);
    expect(logLines(agent.stderr()).find((l) => l.msg.startsWith('export to'))!.msg).toMatch(new RegExp(`^export to http://127\\.0\\.0\\.1:${port}/v1/metrics\\?api_key=\\*\\*\\* failed`));
  });

  it('Prometheus alone, a source that cannot be read: a warning per collection, not per scrape', async () => {
    const image = writeImage(readFileSync(IMAGE), 'agent-truncated');
    const port = await freePort();
    agent = startAgentProcess(['--file', image, '--prometheus', `127.0.0.1:${port}`, '--interval', '60000']);
    await agent.waitForLog(/reading 1 stats fds/, 20_000);
    truncateSync(image, 0); // its next read fails
    const start = performance.now();
    for (let i = 0; i < 20; i++) expect((await fetch(`http://127.0.0.1:${port}/metrics`)).status).toBe(200);
    const elapsed = performance.now() - start;
    expect(await agent.stop('SIGTERM')).toBe(0);
    const warnings = logLines(agent.stderr()).filter((line) => /stats fds could not be read/.test(line.msg));
    // Scrapes within a second of a collection share it: one collection a second at most.
    expect(warnings.length).toBeGreaterThanOrEqual(1);
    expect(warnings.length).toBeLessThanOrEqual(Math.ceil(elapsed / 1000) + 1);
  });

  it('a collector that answers every export with a 3 MB partial-success message: the log stays small', async () => {
    const huge = JSON.stringify({ partialSuccess: { rejectedDataPoints: '1', errorMessage: `rejected: ${'x'.repeat(3_000_000)}` } });
    let requests = 0;
    const chatty = createHttpServer((request, response) => {
      request.resume();
      request.on('end', () => {
        requests++;
        response.writeHead(200, { 'content-type': 'application/json' }).end(huge);
      });
    }).listen(0, '127.0.0.1');
    await once(chatty, 'listening');
    try {
      agent = startAgentProcess(['--file', IMAGE, '--protocol', 'http/json', '--endpoint', `http://127.0.0.1:${(chatty.address() as AddressInfo).port}`, '--interval', '100', '--export-timeout', '100']);
      for (let waited = 0; requests < 25 && waited < 30_000; waited += 50) await new Promise((resolve) => setTimeout(resolve, 50));
      expect(requests).toBeGreaterThanOrEqual(25);
      expect(await agent.stop('SIGTERM')).toBe(0);
    } finally {
      chatty.close();
    }
    const lines = logLines(agent.stderr());
    const partial = lines.filter((line) => line.msg.includes('Partial Success'));
    // Each line cut to 2,000 characters of message, and at most 10 of its kind a minute.
    expect(partial.length).toBe(10);
    for (const line of partial) expect(line.msg.length).toBeLessThan(2_100);
    expect(agent.stderr().length).toBeLessThan(100_000);
  });

  it('a collector that is down at the end: the last line says it was the last export, not that it will retry', async () => {
    const closed = `http://127.0.0.1:${await freePort()}`;
    agent = startAgentProcess(['--file', IMAGE, '--endpoint', closed, '--interval', '60000', '--export-timeout', '3000', '--timeout', '500']);
    await agent.waitForLog(/"failures":1,/, 20_000); // the first export, at start
    expect(await agent.stop('SIGTERM')).toBe(0);
    const failures = logLines(agent.stderr()).filter((line) => line.msg.startsWith('export to'));
    expect(failures.map((line) => line.msg.replace(/ failed: .*?; /, ' failed: ...; '))).toEqual([
      `export to ${closed}/v1/metrics failed: ...; retrying at the next interval: check that the collector runs and the endpoint is right`,
      `export to ${closed}/v1/metrics failed: ...; this was the last export, as the agent stops: check that the collector runs and the endpoint is right`,
    ]);
  });

  it('says why it cannot serve Prometheus on a host that is not this one\'s', async () => {
    for (const [host, why] of [
      ['192.0.2.1', '192.0.2.1 is not an address of this host: give one of its addresses, or none to listen on every interface'],
      ['nonexistent.invalid', '(no host named nonexistent.invalid is known here|the name nonexistent.invalid could not be looked up now): give (a name or address of this host|an address of this host), or none to listen on every interface'],
    ]) {
      const port = await freePort();
      agent = startAgentProcess(['--file', IMAGE, '--prometheus', `${host}:${port}`]);
      expect(await agent.exited(20_000)).toBe(1);
      expect(agent.stderr()).toMatch(new RegExp(`^kvm-stats-otel: serving Prometheus on ${host}:${port} failed with E[A-Z_]+: ${why} with --prometheus \\[host:\\]port\n$`));
      expect(agent.stderr()).not.toContain('choose another port');
    }
  });

  it('says when the Prometheus port is taken, and exits 1', async () => {
    const port = await freePort();
    const blocker = startAgentProcess(['--file', IMAGE, '--prometheus', `127.0.0.1:${port}`, '--interval', '60000']);
    try {
      await blocker.waitForLog(/reading 1 stats fds/, 20_000);
      agent = startAgentProcess(['--file', IMAGE, '--prometheus', `127.0.0.1:${port}`]);
      expect(await agent.exited(20_000)).toBe(1);
    } finally {
      await blocker.stop('SIGTERM');
    }
    expect(agent.stderr()).toBe(`kvm-stats-otel: serving Prometheus on 127.0.0.1:${port} failed with EADDRINUSE: choose another port with --prometheus [host:]port\n`);
  });

  it('Prometheus alone: scrapes wait for the resource, so target_info has host.id and nothing is logged', async () => {
    // What the SDK's host detector reads, read here too.
    const machineId = readFileSync('/etc/machine-id', 'utf8').trim();
    const port = await freePort();
    agent = startAgentProcess(['--file', IMAGE, '--prometheus', `127.0.0.1:${port}`, '--interval', '60000']);
    await agent.waitForLog(/reading 1 stats fds/, 20_000);
    for (let i = 0; i < 3; i++) {
      const scrape = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      expect(scrape).toMatch(new RegExp(`^target_info\\{.*host_id="${machineId}".*\\} 1$`, 'm'));
      expect(scrape).toMatch(/^kvm_vcpu_exits_total\{kvm_vcpu_id="3",.*\} 1000$/m);
    }
    expect(await agent.stop('SIGTERM')).toBe(0);
    const lines = logLines(agent.stderr());
    expect(lines.filter((line) => line.level === 'error')).toEqual([]);
    expect(agent.stderr()).not.toContain('async attributes');
  });
});

describeKvm('agent on a demo VM (real KVM)', () => {
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    it(`${signal}: one last collection and export, every fd closed, exit 0`, async () => {
      collector = await LocalCollector.start();
      // An interval far longer than the test: one export at start, then only the one at exit.
      agent = startAgentProcess(['--demo', '2', '--endpoint', collector.endpoint, '--interval', '600000', '--export-timeout', '20000']);
      await collector.waitForRequests(1, 30_000);
      await agent.waitForLog(/"msg":"reading 3 stats fds from demo VM/, 30_000);
      expect(await agent.stop(signal)).toBe(0);
      expect(collector.requests).toHaveLength(2);
      const [atStart, atExit] = collector.requests.map((r) => metric(r, 'kvm.vcpu.exits')!.sum!.dataPoints);
      expect(atExit!.map((p) => p.attributes['kvm.vcpu.id']).sort()).toEqual([0, 1]);
      for (const point of atExit!) {
        const before = atStart!.find((p) => p.attributes['kvm.vcpu.id'] === point.attributes['kvm.vcpu.id'])!;
        expect(pointValue(point)).toBeGreaterThan(pointValue(before));
      }
      const lines = logLines(agent.stderr());
      expect(lines.map((l) => l.msg)).toEqual([
        expect.stringMatching(/^reading 3 stats fds/),
        expect.stringMatching(/^VM demo \(process \d+\) found: 2 vCPU\(s\)$/),
        `${signal}: one last collection and export, then exit`,
        'stopped: every stats fd closed',
      ]);
      // Counted in /proc/self/fd by the agent after closing: no VM, vCPU or stats fd is left.
      expect(lines.at(-1)!.openKvmFds).toBe(0);
    });
  }

  it('--scan finds VMMs started after it at the next rescan, and lets go of them when they exit', async () => {
    agent = startAgentProcess(['--scan', '--console', '--interval', '300', '--rescan-interval', '300', '--log-level', 'info']);
    await agent.waitForLog(/"msg":"reading \d+ stats fds from scan of \/proc/, 30_000);
    const vmm = await startVmm(['--vcpus', '1', '-name', 'guest=late']);
    try {
      await agent.waitForOutput(new RegExp(`^kvm\\.vcpu\\.exits\\{process\\.pid=${vmm.pid},kvm\\.vm\\.name=late,kvm\\.vcpu\\.id=0\\} sum 1 \\d+$`, 'm'), 30_000);
    } finally {
      // Killed, so that its stats fds go only with the process. (A VMM that closes them first,
      // as the fixture does on a clean stop, is let go of silently at the next rescan.)
      const exited = once(vmm.child, 'exit');
      vmm.child.kill('SIGKILL');
      await exited;
    }
    await agent.waitForLog(new RegExp(`process ${vmm.pid} \\(node\\) exited: closed its 2 stats fds`), 30_000);
    expect(await agent.stop('SIGTERM')).toBe(0);
  });

  it('--scan: says at info, with its name, when a VM is found (pid, vCPUs), hot-plugged and gone; its banner has no demo hints', async () => {
    agent = startAgentProcess(['--scan', '--console', '--interval', '300', '--rescan-interval', '300', '--log-level', 'info']);
    await agent.waitForLog(/"msg":"reading \d+ stats fds from scan of \/proc/, 30_000);
    const banner = agent.stdout().split('\n').filter((line) => line.startsWith('#'));
    expect(banner).toEqual([
      '# kvm-stats-otel agent: reading the KVM stats of every VMM found in /proc;',
      '# every 0.3 s, exporting to this console. Ctrl-C stops it.',
      '# To a collector as well: --endpoint http://collector:4318 (or OTEL_EXPORTER_OTLP_ENDPOINT).',
      '# VMs that come and go are followed every 0.3 s, and logged on stderr; kvm-stats-otel list shows what is found.',
      '# Every flag and variable: kvm-stats-otel agent --help; docs/agent.md.',
    ]);
    const { child: vmm } = await JsonLineChild.start(fixtureCommand('scan-vmm.ts', ['--vcpus', '2', '-name', 'guest=logged']), 'scan-vmm fixture');
    try {
      await agent.waitForLog(new RegExp(`"msg":"VM logged \\(process ${vmm.pid}\\) found: 2 vCPU\\(s\\)"`), 30_000);
      await vmm.request('vcpu');
      await agent.waitForLog(new RegExp(`"msg":"VM logged \\(process ${vmm.pid}\\): 3 vCPU\\(s\\), was 2"`), 30_000);
    } finally {
      // A clean stop: the VMM closes its stats fds (a VM destroyed) or exits first, whichever the scan sees.
      await vmm.stop();
    }
    await agent.waitForLog(new RegExp(`"msg":"(VM logged \\(process ${vmm.pid}\\) gone: its stats fds were closed|process ${vmm.pid} \\(node\\) exited: closed its 4 stats fds)"`), 30_000);
    expect(await agent.stop('SIGTERM')).toBe(0);
    const about = logLines(agent.stderr()).filter((l) => l.processPid === vmm.pid);
    expect(about.length).toBeGreaterThanOrEqual(2);
    for (const line of about) expect(line).toMatchObject({ level: 'info', vmName: 'logged' });
    // Found first; the stand-in's vCPUs share a thread, which is said once (no scheduler time).
    expect(about.filter((l) => l.kind !== 'no-schedstat')[0]).toMatchObject({ vcpus: 2 });
    expect(about.filter((l) => l.kind === 'no-schedstat')).toHaveLength(1);
  });

  it('--include, --exclude and --vcpu-aggregation vm: exactly the chosen stats, one series per VM, a typo said once', async () => {
    collector = await LocalCollector.start();
    agent = startAgentProcess([
      '--demo', '3', '--endpoint', collector.endpoint, '--interval', '300',
      '--include', 'vcpu:exits,vcpu:halt_*', '--include', 'vcpu:blocking,vcpu:exitz', '--exclude', 'vcpu:*_hist,vm:*', '--vcpu-aggregation', 'vm',
    ]);
    const requests = await collector.waitForRequests(3, 30_000);
    expect(await agent.stop('SIGTERM')).toBe(0);
    const kvm = (request: MetricsRequest) => metricsOf(request).filter((m) => m.scope === 'kvm-stats-otel').map((m) => m.metric);
    const names = kvm(requests[1]!).map((m) => m.name).sort();
    expect(names).toContain('kvm.vcpu.exits');
    expect(names).toContain('kvm.vcpu.halt_wait_ns');
    for (const name of names) expect(name).toMatch(/^kvm\.vcpu\.(exits|blocking|halt_(?!.*_hist$).*)$/);
    const exits = requests.map((r) => kvm(r).find((m) => m.name === 'kvm.vcpu.exits')!.sum!.dataPoints);
    for (const points of exits) {
      expect(points).toHaveLength(1);
      expect(Object.keys(points[0]!.attributes).sort()).toEqual(['kvm.vm.name', 'process.pid']);
    }
    // The demo guest runs on 3 vCPUs: the VM's sum grows.
    expect(pointValue(exits[2]![0]!)).toBeGreaterThan(pointValue(exits[0]![0]!));
    expect(kvm(requests[1]!).find((m) => m.name === 'kvm.vcpu.blocking')!.unit).toBe('{vcpu}');
    const typo = logLines(agent.stderr()).filter((l) => l.msg.includes('vcpu:exitz'));
    expect(typo).toEqual([
      expect.objectContaining({ level: 'warn', component: 'opentelemetry', msg: expect.stringMatching(/KVM stat include pattern vcpu:exitz matches none of the \d+ vCPU stats of this kernel, so it selects nothing/) }),
    ]);
  });

  it('npm start: the agent on a demo VM printing to the console, first saying how to point it at real things', async () => {
    const script = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: { start: string } }).scripts.start;
    const [node, bin, command, ...args] = script.split(' && ').at(-1)!.split(' ');
    expect([node, bin, command]).toEqual(['node', 'dist/cli/main.js', 'agent']);
    agent = startAgentProcess(args);
    await agent.waitForOutput(/^kvm\.vcpu\.exits\{process\.pid=\d+,kvm\.vm\.name=demo,kvm\.vcpu\.id=1\} sum 1 \d+$/, 30_000);
    const [first, second, collector, vms] = agent.stdout().split('\n');
    expect(first).toBe('# kvm-stats-otel agent: reading the KVM stats of a demo VM made here (2 vCPUs);');
    expect(second).toMatch(/^# every 5 s, exporting to this console\. Ctrl-C stops it\.$/);
    expect(collector).toMatch(/^# A real collector: OTEL_EXPORTER_OTLP_ENDPOINT=/);
    expect(vms).toMatch(/^# Real VMs: kvm-stats-otel agent --scan /);
    expect(await agent.stop('SIGINT')).toBe(0);
    expect(agent.stderr()).toBe('');
  });

  it('never shows the credentials of an endpoint URL: not in the banner, the start-up line or a failed export', async () => {
    const port = await freePort();
    agent = startAgentProcess(['--file', IMAGE, '--console', '--otlp', '--endpoint', `http://alice:s3cr3t@127.0.0.1:${port}`, '--interval', '300', '--timeout', '200']);
    await agent.waitForLog(/"failures":2,/, 30_000);
    expect(await agent.stop('SIGTERM')).toBe(0);
    const everything = agent.stdout() + agent.stderr();
    expect(everything).not.toContain('s3cr3t');
    expect(everything).not.toContain('alice');
    // Still says where it sends, credentials masked.
    expect(agent.stdout()).toContain(`OTLP http/protobuf to http://***@127.0.0.1:${port}/v1/metrics`);
    expect(logLines(agent.stderr()).find((l) => l.msg.startsWith('export to'))!.msg).toMatch(new RegExp(`^export to http://\\*\\*\\*@127\\.0\\.0\\.1:${port}/v1/metrics failed`));
  });

  it('logs an unreachable collector once per export, keeps collecting, and sends again when it is back', async () => {
    const port = await freePort();
    agent = startAgentProcess(['--demo', '1', '--endpoint', `http://127.0.0.1:${port}`, '--interval', '400', '--timeout', '300']);
    await agent.waitForLog(/"failures":3,/, 30_000);
    collector = await LocalCollector.start(port);
    const [request] = await collector.waitForRequests(1, 30_000);
    await agent.waitForLog(/works again after \d+ failed exports/, 10_000);
    // Data flows again, and collection went on meanwhile: the self-telemetry counted every collection.
    const reads = pointValue(metric(request!, 'kvm_stats_otel.sources.read')!.sum!.dataPoints[0]!);
    expect(reads).toBeGreaterThanOrEqual(2 * 4);
    expect(await agent.stop('SIGTERM')).toBe(0);

    const lines = logLines(agent.stderr());
    const failures = lines.filter((l) => l.level === 'warn');
    // One line per failed export (not per stat or per fd), numbered 1, 2, 3, ...
    expect(failures.map((l) => l.failures)).toEqual(failures.map((_, i) => i + 1));
    expect(failures[0]!.msg).toMatch(new RegExp(`^export to http://127\\.0\\.0\\.1:${port}/v1/metrics failed: connect ECONNREFUSED .*; retrying at the next interval: check that the collector runs and the endpoint is right$`));
    // Nothing else was logged on the way: the SDK's own messages about the failures went to debug.
    expect(lines.filter((l) => l.level !== 'warn').map((l) => l.msg)).toEqual([
      expect.stringMatching(/^reading 2 stats fds/),
      expect.stringMatching(/^VM demo \(process \d+\) found: 1 vCPU\(s\)$/),
      `export to http://127.0.0.1:${port}/v1/metrics works again after ${failures.length} failed exports`,
      'SIGTERM: one last collection and export, then exit',
      'stopped: every stats fd closed',
    ]);
  });
});

/** One scrape of `agent --demo 1 --units UNITS --prometheus`. */
async function scrape(units: UnitMode): Promise<string> {
  const port = await freePort();
  agent = startAgentProcess(['--demo', '1', '--units', units, '--prometheus', `127.0.0.1:${port}`, '--interval', '60000']);
  await agent.waitForLog(/"msg":"reading 2 stats fds from demo VM/, 30_000);
  const response = await fetch(`http://127.0.0.1:${port}/metrics`);
  expect(response.status).toBe(200);
  const text = await response.text();
  expect(await agent.stop('SIGTERM')).toBe(0);
  agent = undefined;
  return text;
}

function promtool(text: string) {
  const result = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8', timeout: 30_000 });
  return { status: result.status, output: result.stdout + result.stderr };
}

/** The KVM stats' series names of a scrape (sample lines only; not target_info or self-telemetry). */
function kvmSeries(text: string): Set<string> {
  return new Set(text.split('\n').flatMap((line) => /^kvm_(?:vm|vcpu)_[^{ ]*/.exec(line)?.[0] ?? []));
}

/** Every Prometheus series `schema` names for this kernel's stats in a unit mode. */
function schemaSeries(units: UnitMode): Set<string> {
  const result = runBin(['schema', '--demo', '1', '--format', 'json']);
  expect(result.code, result.stderr).toBe(0);
  const schema = JSON.parse(result.stdout) as Schema;
  return new Set(schema.tables.flatMap((t) => t.stats.flatMap((s) => s.names[units].prometheus.series)));
}

describeKvm('Prometheus names of a real VM\'s scrape', () => {
  it('--units base: promtool check metrics passes, and the series are schema\'s base names (kvm_vcpu_halt_wait_seconds_total)', async () => {
    const text = await scrape('base');
    expect(text).toMatch(/^kvm_vcpu_halt_wait_seconds_total\{/m);
    expect(kvmSeries(text)).toEqual(schemaSeries('base'));
    const { status, output } = promtool(text);
    expect(output).toBe('');
    expect(status).toBe(0);
  });

  it('--units exact: the kernel\'s names verbatim, which promtool flags (exit 3)', async () => {
    const text = await scrape('exact');
    expect(kvmSeries(text)).toEqual(schemaSeries('exact'));
    const { status, output } = promtool(text);
    expect(output).toContain('kvm_vcpu_halt_wait_ns_total metric names should not contain abbreviated units');
    expect(status).toBe(3);
  });
});
