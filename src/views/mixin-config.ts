/**
 * The mixin's one config: the selectors that find the agent's series, the labels that name a
 * host, a VM and a vCPU, the rate window, every alert's threshold and duration, where the runbook
 * is, and the dashboards' settings. `kvm-stats-otel mixin` writes the config it used beside the
 * rules (mixin/config.json) and reads an edited one back with `--config`: a file from outside,
 * checked field by field.
 */
import { readFileSync, statSync } from 'node:fs';

export interface MixinConfig {
  /** Label matchers of the KVM series and of the agent's own, without braces: `job="kvm-stats-otel"`. */
  readonly kvmSelector: string;
  readonly agentSelector: string;
  /** Labels that tell hosts apart (the agent's job and instance, either way in). */
  readonly hostLabels: readonly string[];
  /** Labels that, with the host's, tell VMs apart. */
  readonly vmLabels: readonly string[];
  /** The label that, with a VM's, tells its vCPUs apart. */
  readonly vcpuLabel: string;
  /** The window of every rate in the recording rules, a Prometheus duration ("5m"). */
  readonly rateInterval: string;
  readonly alerts: {
    /** Run delay (steal) as a share of a vCPU's time, and how long it must last. */
    readonly runDelayRatio: number;
    readonly runDelayFor: string;
    /** Halt polling: CPU share a vCPU spends polling, the share of that which failed, how long. */
    readonly haltPollCpuRatio: number;
    readonly haltPollFailedRatio: number;
    readonly haltPollFor: string;
    /** Exit storm: exits/s this many times a vCPU's own average over the baseline window
     * (ending at the offset), and at least minRate. */
    readonly exitStormFactor: number;
    readonly exitStormMinRate: number;
    readonly exitStormBaseline: string;
    readonly exitStormBaselineOffset: string;
    readonly exitStormFor: string;
    /** A VM whose vCPUs made no exit at all over the rate window, for this long. */
    readonly vmNotExitingFor: string;
    /** The agent: failed reads, failed exports, and its telemetry gone. */
    readonly agentReadErrorsFor: string;
    readonly agentExportFailuresWindow: string;
    readonly agentExportFailuresFor: string;
    /** Its telemetry was seen within this window and is gone now. */
    readonly agentAbsentWindow: string;
    readonly agentAbsentFor: string;
  };
  /** Prefix of every alert's runbook_url: the runbook's anchors are appended. */
  readonly runbookUrl: string;
  readonly grafana: {
    /** Prefix of the dashboards' uids. */
    readonly uidPrefix: string;
    readonly refresh: string;
    readonly timeFrom: string;
    readonly tags: readonly string[];
  };
}

export const DEFAULT_MIXIN_CONFIG: MixinConfig = {
  kvmSelector: 'job="kvm-stats-otel"',
  agentSelector: 'job="kvm-stats-otel"',
  hostLabels: ['job', 'instance'],
  vmLabels: ['process_pid', 'kvm_vm_name'],
  vcpuLabel: 'kvm_vcpu_id',
  rateInterval: '5m',
  alerts: {
    runDelayRatio: 0.1,
    runDelayFor: '15m',
    haltPollCpuRatio: 0.1,
    haltPollFailedRatio: 0.8,
    haltPollFor: '30m',
    exitStormFactor: 5,
    exitStormMinRate: 20000,
    exitStormBaseline: '1h',
    exitStormBaselineOffset: '15m',
    exitStormFor: '10m',
    vmNotExitingFor: '10m',
    agentReadErrorsFor: '15m',
    agentExportFailuresWindow: '15m',
    agentExportFailuresFor: '5m',
    agentAbsentWindow: '1h',
    agentAbsentFor: '5m',
  },
  // Where the runbook is served: runbook.md beside the rules until set to its URL.
  runbookUrl: 'runbook.md',
  grafana: { uidPrefix: 'kvm-stats-otel', refresh: '30s', timeFrom: 'now-3h', tags: ['kvm', 'kvm-stats-otel'] },
};

/** A config file that does not check: which file, which field, what is wrong. */
export class MixinConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MixinConfigError';
  }
}

const DURATION = /^(\d+(ms|s|m|h|d|w|y))+$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** Checks `value` against the shape of `defaults`, field by field; `at` names the field. */
function checked(value: unknown, defaults: unknown, at: string, fail: (field: string, problem: string) => never): unknown {
  if (Array.isArray(defaults)) {
    if (!Array.isArray(value) || value.some((item) => typeof item !== 'string' || !LABEL.test(item))) fail(at, 'is not a list of label names');
    return value;
  }
  if (typeof defaults === 'object' && defaults !== null) {
    if (typeof value !== 'object' || value === null || Array.isArray(value)) fail(at, 'is not an object');
    const known = Object.keys(defaults);
    for (const key of Object.keys(value)) if (!known.includes(key)) fail(at ? `${at}.${key}` : key, `is not a setting (known: ${known.join(', ')})`);
    return Object.fromEntries(
      known.map((key) => {
        const field = at ? `${at}.${key}` : key;
        const given = (value as Record<string, unknown>)[key];
        return [key, given === undefined ? (defaults as Record<string, unknown>)[key] : checked(given, (defaults as Record<string, unknown>)[key], field, fail)];
      }),
    );
  }
  if (typeof defaults === 'number') {
    if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) fail(at, 'is not a number of 0 or more');
    return value;
  }
  if (typeof value !== 'string' || /[\x00-\x1f\x7f]/.test(value) || value.length > 1024) fail(at, 'is not a string of printable characters');
  if (/(For|Baseline|Offset|Window|Interval)$/.test(at) && !DURATION.test(value)) fail(at, `is ${JSON.stringify(value)}, not a Prometheus duration such as "5m"`);
  if (/Label$/.test(at) && !LABEL.test(value)) fail(at, 'is not a label name');
  return value;
}

/** The config in `text` (JSON), missing fields from the defaults; a MixinConfigError names the field. */
export function parseMixinConfig(text: string, file: string): MixinConfig {
  const fail = (field: string, problem: string): never => {
    throw new MixinConfigError(`invalid mixin config ${file}: ${field || 'the document'} ${problem}`);
  };
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new MixinConfigError(`invalid mixin config ${file}: not JSON (${(error as Error).message})`);
  }
  return checked(json, DEFAULT_MIXIN_CONFIG, '', fail) as MixinConfig;
}

/** Reads a config file (at most 64 KiB). */
export function readMixinConfig(path: string): MixinConfig {
  const stat = statSync(path);
  if (!stat.isFile() || stat.size > 64 * 1024) throw new MixinConfigError(`invalid mixin config ${path}: not a regular file of at most 64 KiB`);
  return parseMixinConfig(readFileSync(path, 'utf8'), path);
}

/** The config as the file `mixin` writes. */
export function mixinConfigJson(config: MixinConfig): string {
  return `${JSON.stringify(config, null, 2)}\n`;
}
