/**
 * Structured logs: pino, JSON lines on stderr (stdout is for --console), written synchronously
 * so the last lines before exit are not lost. The OpenTelemetry SDK's own diagnostics go to
 * the same logger.
 */
import { DiagLogLevel, diag } from '@opentelemetry/api';
import { type Logger, pino } from 'pino';
import type { LogLevel } from './config.js';

export type { Logger } from 'pino';

export function createLogger(level: LogLevel): Logger {
  return pino(
    {
      name: 'kvm-stats-otel',
      level,
      base: { pid: process.pid },
      formatters: { level: (label) => ({ level: label }) },
    },
    pino.destination({ fd: 2, sync: true }),
  );
}

/**
 * SDK messages the agent reports itself, once per interval and with what to do: the reader's
 * and exporters' versions of them would repeat each failure with a stack, so they go to debug.
 */
const REPORTED_BY_AGENT = [
  'PeriodicExportingMetricReader: metrics export failed',
  'PeriodicExportingMetricReader: metrics collection errors',
  'PeriodicExportingMetricReader: metrics export timed out',
  'PrometheusExporter: metrics collection errors',
  'Export retry time',
];

function text(args: unknown[]): string {
  return args.map((arg) => (arg instanceof Error ? arg.message : typeof arg === 'string' ? arg : JSON.stringify(arg))).join(' ');
}

/** Routes the OpenTelemetry API's diag messages into `log`, under component "opentelemetry". */
export function routeDiagnostics(log: Logger): void {
  const sdk = log.child({ component: 'opentelemetry' });
  const at = (level: 'error' | 'warn' | 'info' | 'debug' | 'trace') => (message: string, ...args: unknown[]) => {
    const line = text([message, ...args]);
    // The default error handler logs a JSON-stringified error: look inside it too.
    const reported = REPORTED_BY_AGENT.some((prefix) => line.includes(prefix));
    sdk[reported ? 'debug' : level](line);
  };
  diag.disable();
  diag.setLogger(
    { error: at('error'), warn: at('warn'), info: at('info'), debug: at('debug'), verbose: at('trace') },
    { logLevel: log.isLevelEnabled('trace') ? DiagLogLevel.ALL : log.isLevelEnabled('debug') ? DiagLogLevel.DEBUG : DiagLogLevel.INFO, suppressOverrideMessage: true },
  );
}
