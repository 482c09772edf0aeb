/**
 * `kvm-stats-otel agent`: the standalone agent. Reads stats fds on an interval and exports
 * them as OTLP, a Prometheus endpoint or console lines until SIGINT or SIGTERM, then does one
 * last collection and export and exits 0 with every fd closed.
 */
import { Command } from 'commander';
import { startAgent } from '../agent/run-loop.js';
import { type AgentConfig, type AgentFlags, redactedUrl, resolveConfig } from '../agent/config.js';
import { demoFallback, shownPath } from '../setup/demo-fallback.js';
import { createLogger, routeDiagnostics } from '../agent/log.js';
import { isRecordingFile } from '../sources/recording.js';
import { addConfigOptions, addSourceOptions, inFlagTerms } from './flags.js';
import { problemText } from './hints.js';

/** What --console prints first: what runs, and how to point it at real things; where a demo VM
 * could not be made, first the line that says why (`fallback`, demoFallback's notice). */
export function banner(config: AgentConfig, fallback?: string): string {
  const what = [
    config.sources.demo !== undefined ? `a demo VM made here (${config.sources.demo} vCPUs)` : '',
    ...(config.sources.pid ?? []).map((pid) => `process ${pid}`),
    ...(config.sources.file ?? []).map((file) => (isRecordingFile(file) ? `recording ${shownPath(file)}, replayed in a loop` : `image ${file}`)),
    config.sources.scan ? 'every VMM found in /proc' : '',
    config.sources.listen !== undefined ? `whatever is handed over on ${config.sources.listen}` : '',
  ].filter(Boolean);
  const to = [
    config.otlp ? `OTLP ${config.otlp.protocol} to ${redactedUrl(config.otlp.url)}` : '',
    config.prometheus ? `a Prometheus endpoint on ${config.prometheus.host ?? ''}:${config.prometheus.port}/metrics` : '',
    'this console',
  ].filter(Boolean);
  const demo = config.sources.demo !== undefined || fallback !== undefined;
  const found = config.sources.scan || config.sources.listen !== undefined;
  return [
    fallback !== undefined ? `# ${fallback}.` : '',
    `# kvm-stats-otel agent: reading the KVM stats of ${what.join(', ')};`,
    `# every ${config.exportIntervalMillis / 1000} s, exporting to ${to.join(' and ')}. Ctrl-C stops it.`,
    // The demo's hints lead to real things; a run on real VMs needs only what fits it.
    demo ? '# A real collector: OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318 npm start (or agent --endpoint URL).' : '',
    demo ? '# Real VMs: kvm-stats-otel agent --scan (every VMM on the host; root), or --pid PID for one.' : '',
    !demo && !config.otlp ? '# To a collector as well: --endpoint http://collector:4318 (or OTEL_EXPORTER_OTLP_ENDPOINT).' : '',
    found ? `# VMs that come and go are followed every ${config.rescanIntervalMillis / 1000} s, and logged on stderr; kvm-stats-otel list shows what is found.` : '',
    '# Every flag and variable: kvm-stats-otel agent --help; docs/agent.md.',
    '',
  ]
    .filter((line, i, all) => line !== '' || i === all.length - 1)
    .join('\n');
}

/** Resolves on the first SIGINT or SIGTERM; a second one exits at once. */
function stopSignal(onSecond: (signal: NodeJS.Signals) => void): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const first = (signal: NodeJS.Signals): void => {
      process.off('SIGINT', first).off('SIGTERM', first);
      process.once('SIGINT', onSecond).once('SIGTERM', onSecond);
      resolve(signal);
    };
    process.on('SIGINT', first).on('SIGTERM', first);
  });
}

async function run(flags: AgentFlags): Promise<void> {
  let config = resolveConfig(flags);
  const log = createLogger(config.logLevel);
  routeDiagnostics(log);
  // No KVM here for the demo VM: the shipped recording in its place, said once (banner or log).
  const fallback = demoFallback(config.sources);
  if (fallback) config = { ...config, sources: fallback.sources };
  if (config.console) process.stdout.write(banner(config, fallback?.notice));
  else if (fallback) log.warn({ kvm: fallback.kvm.cause }, fallback.notice);
  const signal = stopSignal((again) => {
    log.warn(`${again} again: exiting without waiting for the last export`);
    process.exit(1);
  });
  const agent = await startAgent(config, log, problemText);
  const received = await signal;
  log.info({ signal: received }, `${received}: one last collection and export, then exit`);
  await agent.stop();
  // An export request still in flight (a collector that does not answer) would hold the process
  // until its own timeout: the export timeout is over, so exit now with the code main() sets.
  setTimeout(() => process.exit(), 100).unref();
}

export function agentCommand(): Command {
  const command = new Command('agent').description(
    'read KVM stats fds on an interval and export them: OTLP over HTTP (protobuf or JSON), a Prometheus endpoint, the console',
  );
  addSourceOptions(command);
  addConfigOptions(command);
  command.addHelpText('after', '\nA flag overrides its environment variable. Exit codes: 0 stopped by SIGINT/SIGTERM, 1 runtime error, 2 bad flag or variable.');
  return command.action(async (flags: AgentFlags) => {
    try {
      await run(flags);
    } catch (error) {
      throw inFlagTerms(error);
    }
  });
}
