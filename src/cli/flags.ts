/**
 * Every flag of the command line and how its value is parsed: a bad value is commander's usage
 * error (exit 2), naming the flag. The agent's settings, their variables and defaults come from
 * agent/config.ts (SETTINGS, AGENT_DEFAULTS); this file says which flag gives each, and turns
 * the agent's setting errors into the CLI's words.
 */
import { type Command, InvalidArgumentError, Option } from 'commander';
import {
  AGENT_DEFAULTS,
  type AgentFlags,
  ConfigError,
  LOG_LEVELS,
  SETTINGS,
  type Setting,
  type SettingName,
  SettingError,
  headerList,
  milliseconds,
  prometheusAddress,
} from '../agent/config.js';
import { VCPU_AGGREGATIONS } from '../otel/aggregation.js';
import { StatSelection } from '../otel/selection.js';
import { NoSourcesError } from '../setup/open-sources.js';
import { DEMO_MAX_VCPUS } from '../sources/demo.js';
import { UsageError } from './usage-error.js';

// ---- value parsers ----

export function integerOption(min: number, max: number) {
  return (text: string): number => {
    const value = Number(text);
    if (!/^\d+$/.test(text) || value < min || value > max) {
      throw new InvalidArgumentError(`expected a whole number from ${min} to ${max}, got ${JSON.stringify(text)}`);
    }
    return value;
  };
}

/** For repeatable options: --pid 1 --pid 2. */
export function collect<T>(parse: (text: string) => T) {
  // Appended in place: a copy per flag is quadratic (10,000 `--file` images made 940 MiB of
  // garbage at start-up, and grew V8's young generation to its largest).
  return (text: string, previous: T[] | undefined): T[] => {
    const list = previous ?? [];
    list.push(parse(text));
    return list;
  };
}

export const pidOption = integerOption(1, 2 ** 22);

/** Seconds, as `top --interval` takes them. */
export function secondsOption(text: string): number {
  const value = Number(text);
  if (!/^\d+(\.\d+)?$/.test(text) || value < 0.1 || value > 3600) {
    throw new InvalidArgumentError('expected a number of seconds from 0.1 to 3600');
  }
  return value;
}

/** Counts of stats fds separated by commas, as `bench --sizes` takes them. */
export function sizesOption(text: string): number[] {
  const sizes = text.split(',').map((part) => Number(part.trim()));
  if (sizes.length === 0 || sizes.some((size) => !Number.isInteger(size) || size < 1 || size > 20_000)) {
    throw new InvalidArgumentError(`expected stats fd counts from 1 to 20000 separated by commas, got ${JSON.stringify(text)}`);
  }
  return sizes;
}

/** KEY=VALUE, as `handoff --attribute` takes it. */
export function attributeOption(text: string): [string, string] {
  const at = text.indexOf('=');
  if (at <= 0) throw new InvalidArgumentError(`expected KEY=VALUE, got ${JSON.stringify(text)}`);
  return [text.slice(0, at), text.slice(at + 1)];
}

/** Turns a value parser of the agent's into a commander one, so a bad flag is commander's usage error. */
function flagParser<T>(parse: (text: string) => T): (text: string) => T {
  return (text) => {
    try {
      return parse(text);
    } catch (error) {
      throw new InvalidArgumentError((error as Error).message);
    }
  };
}

/** Like flagParser, for values that may be echoed only as `show` shows them (a URL with its
 * credentials masked): commander's own message repeats the argument as it is. */
function shownParser<T>(flag: string, parse: (text: string) => T, show: (text: string) => string): (text: string) => T {
  return (text) => {
    try {
      return parse(text);
    } catch (error) {
      throw new UsageError(`option '${flag}' argument '${show(text)}' is invalid. ${(error as Error).message}`);
    }
  };
}

/** Like flagParser, for values that must not be echoed (commander's own message repeats the
 * argument): a usage error that names the flag and the problem only. */
function secretParser<T>(flag: string, parse: (text: string) => T): (text: string) => T {
  return (text) => {
    try {
      return parse(text);
    } catch (error) {
      throw new UsageError(`option '${flag}' is invalid: ${(error as Error).message}`);
    }
  };
}

/** A comma-separated list of TARGET:STAT patterns; repeatable, the lists add up. */
function patternsOption(kind: 'include' | 'exclude') {
  return (text: string, previous: string[] | undefined): string[] => {
    const patterns = text.split(',').map((item) => item.trim()).filter(Boolean);
    try {
      // Checked now, so that a bad pattern is a usage error before anything opens.
      new StatSelection({ [kind]: patterns });
    } catch (error) {
      throw new InvalidArgumentError((error as Error).message);
    }
    return [...(previous ?? []), ...patterns];
  };
}

// ---- flag sets ----

/** --units, as `read` has it. */
export function unitsOption(): Option {
  return new Option('--units <mode>', 'exact keeps integers (ns, KiBy); base converts to s and By').choices(['exact', 'base']).default(AGENT_DEFAULTS.units);
}

/** The flags that give the sources, as the CLI's messages list them. */
const SOURCE_FLAGS = '--demo, --pid PID, --file IMAGE, --scan or --listen PATH';

/** Adds --demo [vcpus], --pid PID, --file IMAGE, --scan and --listen PATH to `command`. */
export function addSourceOptions(command: Command): Command {
  return command
    .addOption(
      new Option('--demo [vcpus]', `a demo VM made here with this many vCPUs (needs /dev/kvm; without it, agent, read and top replay the shipped recording)`)
        .argParser(integerOption(1, DEMO_MAX_VCPUS))
        .preset(AGENT_DEFAULTS.demoVcpus),
    )
    .option('--pid <pid>', 'copy the stats fds process PID holds (repeatable; same uid or CAP_SYS_PTRACE)', collect(pidOption))
    .option('--file <path>', 'read a saved stats image (read --save) or replay a recording (record) in a loop, with the identity saved with it (repeatable)', collect(String))
    .option('--scan', 'read every VMM found in /proc/*/fd (root, or the same uid; see README: privilege model)')
    .option('--listen <path>', 'take stats fds handed over on this Unix socket (kvm-stats-otel handoff, the preload helper); needs no privilege');
}

/** --include, --exclude and --vcpu-aggregation: what the agent exports, and what schema and
 * list count. */
export function addSelectionOptions(command: Command): Command {
  return command
    .option('--include <patterns>', 'export only these stats of their target, TARGET:STAT with * and ?, comma-separated, repeatable (e.g. vcpu:exits,vcpu:halt_*); default every stat', patternsOption('include'))
    .option('--exclude <patterns>', 'do not export these stats, TARGET:STAT with * and ?, after --include (e.g. vcpu:*_hist)', patternsOption('exclude'))
    .addOption(
      new Option('--vcpu-aggregation <mode>', 'none: a series per vCPU; vm: one per VM, vCPU values summed (gauges also as .max, booleans as the count of vCPUs set)')
        .choices(VCPU_AGGREGATIONS)
        .default(AGENT_DEFAULTS.vcpuAggregation),
    );
}

/** The flag of each agent setting that has variables; commander's attribute of each is the
 * setting's key (--export-timeout is exportTimeout), as AgentFlags has it. */
const SETTING_FLAGS: Record<SettingName, string> = {
  endpoint: '--endpoint <url>',
  metricsEndpoint: '--metrics-endpoint <url>',
  protocol: '--protocol <protocol>',
  header: '--header <key=value>',
  timeout: '--timeout <ms>',
  temporality: '--temporality <preference>',
  interval: '--interval <ms>',
  exportTimeout: '--export-timeout <ms>',
  serviceName: '--service-name <name>',
  resourceAttributes: '--resource-attributes <key=value,...>',
};

function settings(): [SettingName, Setting<unknown>][] {
  return Object.entries(SETTINGS) as [SettingName, Setting<unknown>][];
}

/** Adds the output and configuration flags to the agent command. */
export function addConfigOptions(command: Command): Command {
  for (const [name, s] of settings()) {
    const defaultText = s.defaultText ? `; default ${s.defaultText}` : '';
    const option = new Option(SETTING_FLAGS[name], `${s.description} (env ${s.env.join(', ')}${defaultText})`);
    // --header repeats: each flag adds its pairs.
    const parser = name === 'header' ? collect(secretParser('--header', headerList)) : s.show ? shownParser(SETTING_FLAGS[name], s.parse, s.show) : flagParser(s.parse);
    command.addOption(option.argParser(parser as (text: string, previous: unknown) => unknown));
  }
  addSelectionOptions(command);
  return command
    .option('--otlp', 'push OTLP even when --prometheus or --console is given without an endpoint')
    .option('--prometheus <[host:]port>', 'serve a Prometheus scrape endpoint at /metrics, beside or instead of OTLP', flagParser(prometheusAddress))
    .option('--console', 'print every data point that would be exported, one line each, on stdout')
    .option('--rescan-interval <ms>', 'how often to look for new VMs and vCPUs (--scan, --pid, --listen); default the export interval', flagParser(milliseconds))
    .addOption(unitsOption())
    .addOption(new Option('--log-level <level>', 'the least severe level logged, as JSON lines on stderr').choices(LOG_LEVELS).default(AGENT_DEFAULTS.logLevel));
}

/** The settings as a Markdown table (flag, variables, default, meaning), for the README. */
export function settingsTable(): string {
  const rows = settings().map(
    ([name, s]) => `| \`${SETTING_FLAGS[name]}\` | ${s.env.map((env) => `\`${env}\``).join(', ')} | ${s.defaultText ?? ''} | ${s.description} |`,
  );
  return ['| flag | environment variables | default | meaning |', '| --- | --- | --- | --- |', ...rows].join('\n');
}

// ---- the agent's errors in the CLI's words ----

/** What the CLI adds to an error about a setting: which flag gives it. */
const SETTING_HINTS: Partial<Record<keyof AgentFlags, (message: string) => string>> = {
  prometheus: (message) => `${message} with --prometheus [host:]port`,
};

/** An error of the agent's in the CLI's words: a setting's flag added, a ConfigError or no
 * source at all made a UsageError (exit 2). Any other error is returned as it is. */
export function inFlagTerms(error: unknown): unknown {
  if (error instanceof NoSourcesError) return new UsageError(`say what to read: ${SOURCE_FLAGS} (see --help)`, { cause: error });
  if (!(error instanceof SettingError)) return error;
  const hint = error.setting !== undefined ? SETTING_HINTS[error.setting] : undefined;
  const message = hint ? hint(error.message) : error.message;
  if (error instanceof ConfigError) return new UsageError(message, { cause: error });
  error.message = message;
  return error;
}
