/**
 * The agent's run loop: open the sources, give every output a producer over them, refresh the
 * sources on the interval, and on stop do one last collection and export within the export
 * timeout, then close every fd.
 */
import { MeterProvider, PeriodicExportingMetricReader } from '@opentelemetry/sdk-metrics';
import { KvmStatsProducer } from '../otel/producer.js';
import type { FramePairing } from '../otel/series-frame.js';
import { AGENT_SCOPE_NAME } from './telemetry-names.js';
import { SCOPE_VERSION } from '../otel/version.js';
import { fdLinks, isStatsLink, isVmLink } from '../sources/proc.js';
import type { Problem } from '../sources/problem.js';
import type { SourceProvider } from '../sources/provider.js';
import type { StatsSource } from '../sources/source.js';
import type { AgentConfig } from './config.js';
import type { Logger } from './log.js';
import { type Output, createOutputs, producerTemporality } from './outputs.js';
import { agentResource } from './resource.js';
import { type OpenSources, openSources } from '../setup/open-sources.js';
import { SelfTelemetry } from './telemetry.js';
import { VmLog } from './vm-log.js';

export interface Agent {
  readonly outputs: readonly Output[];
  readonly providers: readonly SourceProvider[];
  sources(): readonly StatsSource[];
  /** One last collection and export, then every fd closed, all within the export timeout.
   * Resolves to false when the last export (or the outputs' stopping) did not finish in time. */
  stop(): Promise<boolean>;
}

/** KVM fds (VM, vCPU and stats fds) this process holds: 0 after stop(). */
export function openKvmFds(): number {
  return fdLinks(process.pid).filter((link) => isStatsLink(link.target) || isVmLink(link.target)).length;
}

/** Whether `work` settles within `ms` (a failure is logged as `what` failing, and counts as settled). */
async function within(work: Promise<unknown>, ms: number, what: string, log: Logger): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), ms)));
  const done = work.then(
    () => 'done' as const,
    (error: Error) => {
      log.warn(`${what} failed: ${error.message}`);
      return 'done' as const;
    },
  );
  const settled = (await Promise.race([done, late])) === 'done';
  clearTimeout(timer);
  return settled;
}

/** One log line per problem: its kind and process as fields, its text as `describe` words it
 * (the CLI adds which flag helps). */
export async function startAgent(config: AgentConfig, log: Logger, describe: (problem: Problem) => string = (problem) => problem.message): Promise<Agent> {
  const vms = new VmLog(log);
  const open = await openSources(config.sources, (problem) => vms.problem(problem, describe(problem)));
  const { providers, sources } = open;
  let meterProvider: MeterProvider | undefined;
  try {
    // Discovery may find its VMs later; fixed sources must give something now.
    const waitsForVms = config.sources.scan === true || config.sources.listen !== undefined;
    if (sources().length === 0 && !waitsForVms) throw new Error('no stats fd could be read: check the sources (see the warnings above)');
    const telemetry = new SelfTelemetry(sources);
    const producerFor = (output: string, pairedExporter?: FramePairing) =>
      telemetry.instrument(
        new KvmStatsProducer({
          sources,
          temporality: output === 'prometheus' ? undefined : producerTemporality(config.temporality),
          units: config.units,
          include: config.include,
          exclude: config.exclude,
          vcpuAggregation: config.vcpuAggregation,
          // Every output serializes while it exports (OTLP, Prometheus, console), so a result
          // need not outlive the next collection: reused points cost a fraction of the CPU.
          reuseDataPoints: true,
          // OTLP: its series go straight into the exporter's requests (the fused path).
          pairedExporter,
        }),
        output,
        log,
      );
    const outputs = createOutputs(config, producerFor, log, (output) => telemetry.exportFailed(output));
    meterProvider = new MeterProvider({ resource: agentResource(config.serviceName, config.resourceAttributes), readers: outputs.map((o) => o.reader) });
    telemetry.attach(meterProvider.getMeter(AGENT_SCOPE_NAME, SCOPE_VERSION));
    for (const output of outputs) await output.start();
    // The first export now rather than one interval later: a working setup shows data at once,
    // a broken one says so at once. (Its errors are the reader's to report, like every export's.)
    for (const output of outputs) if (output.reader instanceof PeriodicExportingMetricReader) void output.reader.forceFlush().catch(() => undefined);
    log.info(
      { sources: sources().length, providers: providers.map((p) => p.description), outputs: outputs.map((o) => o.description), intervalMs: config.exportIntervalMillis },
      `reading ${sources().length} stats fds from ${providers.map((p) => p.description).join(', ')}; exporting to ${outputs.map((o) => o.description).join(', ')} every ${config.exportIntervalMillis} ms`,
    );
    vms.update(sources());
    return running(config, log, open, outputs, meterProvider, vms);
  } catch (error) {
    await meterProvider?.shutdown().catch(() => undefined);
    await open.close();
    throw error;
  }
}

function running(config: AgentConfig, log: Logger, open: OpenSources, outputs: readonly Output[], meterProvider: MeterProvider, vms: VmLog): Agent {
  const { providers } = open;
  let refreshing = false;
  // Also what keeps the process alive: the SDK's own timers are unref'ed.
  const refreshTimer = setInterval(async () => {
    if (refreshing) return;
    refreshing = true;
    // Indexed: this async function is not optimized, and a for-of made an iterator result per
    // provider (10,000 `--file` images: most of what the agent allocated once nothing else did).
    for (let i = 0; i < providers.length; i++) {
      const provider = providers[i]!;
      if (provider.needsRefresh === false) continue; // nothing more to find: not even a promise made
      await provider.refresh().catch((error: Error) => log.warn({ provider: provider.description }, `refreshing ${provider.description} failed: ${error.message}`));
    }
    vms.update(open.sources());
    refreshing = false;
  }, config.rescanIntervalMillis);
  let stopping: Promise<boolean> | undefined;
  return {
    outputs,
    providers,
    sources: open.sources,
    stop() {
      stopping ??= (async () => {
        clearInterval(refreshTimer);
        // One deadline for all of it: the last export, then closing the sources (a hand-over's
        // refused fds may still be closing on threads that never return: not waited for past it).
        const deadline = performance.now() + config.exportTimeoutMillis;
        for (const output of outputs) output.stopping();
        const finished = await within(meterProvider.shutdown(), config.exportTimeoutMillis, 'the last export', log);
        if (!finished) {
          // Prometheus alone exports nothing at the end: it stops serving, and that is what took too long.
          const pushes = outputs.some((output) => output.name !== 'prometheus');
          log.warn(
            pushes
              ? `the last export did not finish within the export timeout (${config.exportTimeoutMillis} ms); exiting without it`
              : `the Prometheus endpoint did not stop within the export timeout (${config.exportTimeoutMillis} ms); exiting anyway`,
          );
        }
        const closed = await within(open.close(), Math.max(0, deadline - performance.now()), 'closing the sources', log);
        if (closed) log.info({ openKvmFds: openKvmFds() }, 'stopped: every stats fd closed');
        else log.warn({ openKvmFds: openKvmFds() }, `closing the sources did not finish within the export timeout (${config.exportTimeoutMillis} ms); exiting without waiting for it`);
        return finished;
      })();
      return stopping;
    },
  };
}
