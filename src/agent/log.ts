/**
 * Structured logs: pino, JSON lines on stderr (stdout is for --console), written synchronously
 * so the last lines before exit are not lost. The OpenTelemetry SDK's own diagnostics go to
 * the same logger.
 *
 * Much of what is logged comes from outside (a collector's error message, a sender's header, a
 * VMM's -name), so every line is bounded (each string of it at most LOG_LIMITS.textChars) and
 * warnings and errors are rate-limited per kind (its `kind` field and the shape of its message,
 * numbers aside): at most LOG_LIMITS.linesPerKind of a kind per LOG_LIMITS.windowMs, and then one
 * line saying how many were left out.
 */
import { DiagLogLevel, diag } from '@opentelemetry/api';
import { type Logger, pino } from 'pino';
import type { LogLevel } from './config.js';

export type { Logger } from 'pino';

export interface LogLimits {
  /** Characters of any one string of a line (its message, a field). */
  readonly textChars: number;
  /** Warnings and errors of one kind per window. */
  readonly linesPerKind: number;
  readonly windowMs: number;
  /** Kinds followed at once; past that the oldest is forgotten. */
  readonly kinds: number;
}

export const LOG_LIMITS: LogLimits = { textChars: 2000, linesPerKind: 10, windowMs: 60_000, kinds: 1000 };

const WARN = 40;

/** A string cut to `limit` characters, saying how many more there were. */
function bounded(text: string, limit: number): string {
  return text.length <= limit ? text : `${text.slice(0, limit)}... (${text.length - limit} more characters)`;
}

/** The string fields of a line's object (one level: what the agent logs) bounded. */
function boundedFields(fields: Record<string, unknown>, limit: number): Record<string, unknown> {
  let copy: Record<string, unknown> | undefined;
  for (const [key, value] of Object.entries(fields)) {
    if (typeof value === 'string' && value.length > limit) (copy ??= { ...fields })[key] = bounded(value, limit);
  }
  return copy ?? fields;
}

/** One kind's window: lines said in it, and lines left out. */
interface Window {
  start: number;
  said: number;
  leftOut: number;
  /** The message of the first line left out, for the line that says how many. */
  sample: string;
  level: number;
}

export function createLogger(level: LogLevel, limits: LogLimits = LOG_LIMITS): Logger {
  const windows = new Map<string, Window>();
  let logger: Logger;
  /** Says, for every kind whose window has passed with lines left out, how many. */
  const sayLeftOut = (now: number): void => {
    for (const [key, window] of windows) {
      if (now - window.start < limits.windowMs) continue;
      windows.delete(key);
      if (window.leftOut > 0) {
        const text = `${window.leftOut} more line(s) like this were left out in ${Math.round(limits.windowMs / 1000)} s: ${bounded(window.sample, 200)}`;
        (window.level >= 50 ? logger.error : logger.warn).call(logger, { leftOut: window.leftOut }, text);
      }
    }
  };
  setInterval(() => sayLeftOut(Date.now()), Math.max(100, limits.windowMs / 4)).unref();
  logger = pino(
    {
      name: 'kvm-stats-otel',
      level,
      base: { pid: process.pid },
      formatters: { level: (label) => ({ level: label }) },
      hooks: {
        logMethod(args, method, levelNumber) {
          const [first, ...rest] = args as unknown[];
          const fields = typeof first === 'object' && first !== null ? boundedFields(first as Record<string, unknown>, limits.textChars) : undefined;
          const message = String((fields ? rest[0] : first) ?? '');
          if (levelNumber >= WARN) {
            const now = Date.now();
            const key = `${levelNumber}:${(fields?.kind as string | undefined) ?? ''}:${message.replace(/\d+/g, '#').slice(0, 80)}`;
            let window = windows.get(key);
            if (window && now - window.start >= limits.windowMs) {
              sayLeftOut(now);
              window = undefined;
            }
            if (!window) {
              if (windows.size >= limits.kinds) windows.delete(windows.keys().next().value!);
              windows.set(key, (window = { start: now, said: 0, leftOut: 0, sample: '', level: levelNumber }));
            }
            if (window.said >= limits.linesPerKind) {
              if (window.leftOut++ === 0) window.sample = message;
              return;
            }
            window.said++;
          }
          const line = bounded(message, limits.textChars);
          if (fields) method.call(this, fields, line);
          else method.call(this, line);
        },
      },
    },
    pino.destination({ fd: 2, sync: true }),
  );
  return logger;
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
