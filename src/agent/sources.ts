/**
 * Where the agent, `schema` and `top` get their stats fds: command-line options in, a list of
 * SourceProviders out. A new way in (discovery, a hand-over socket) is one option below and
 * one line in providersFor().
 */
import { type Command, Option } from 'commander';
import { integerOption, collect, pidOption } from '../cli/options.js';
import { DEMO_MAX_VCPUS } from '../sources/demo.js';
import { HandoverProvider } from '../sources/handover-receiver.js';
import { DemoProvider, ImageProvider, ProcessProvider, type ProblemReporter, type SourceProvider } from '../sources/provider.js';
import { ScanProvider } from '../sources/scan.js';
import { UsageError } from '../cli/errors.js';

export interface SourceOptions {
  /** vCPUs of a demo VM made here; undefined for none. */
  demo?: number;
  pid?: number[];
  file?: string[];
  /** Read every VMM found in /proc. */
  scan?: boolean;
  /** Take stats fds handed over on this Unix socket. */
  listen?: string;
}

export const DEFAULT_DEMO_VCPUS = 2;

/** Adds --demo [vcpus], --pid PID, --file IMAGE, --scan and --listen PATH to `command`. */
export function addSourceOptions(command: Command): Command {
  return command
    .addOption(
      new Option('--demo [vcpus]', `a demo VM made here with this many vCPUs (needs /dev/kvm)`)
        .argParser(integerOption(1, DEMO_MAX_VCPUS))
        .preset(DEFAULT_DEMO_VCPUS),
    )
    .option('--pid <pid>', 'copy the stats fds process PID holds (repeatable; same uid or CAP_SYS_PTRACE)', collect(pidOption))
    .option('--file <image>', 'replay a saved stats image, from read --save (repeatable)', collect(String))
    .option('--scan', 'read every VMM found in /proc/*/fd (root, or the same uid; see README: privilege model)')
    .option('--listen <path>', 'take stats fds handed over on this Unix socket (kvm-stats-otel handoff, the preload helper); needs no privilege');
}

/** The providers the options ask for; a usage error when they ask for none. */
export function providersFor(options: SourceOptions, report: ProblemReporter): SourceProvider[] {
  const providers: SourceProvider[] = [
    ...(options.file ?? []).map((path) => new ImageProvider(path)),
    ...(options.pid ?? []).map((pid) => new ProcessProvider(pid, report)),
    ...(options.demo !== undefined ? [new DemoProvider({ vcpus: options.demo })] : []),
    ...(options.scan ? [new ScanProvider({ report })] : []),
    ...(options.listen !== undefined ? [new HandoverProvider(options.listen, { report })] : []),
  ];
  if (providers.length === 0) throw new UsageError('say what to read: --demo, --pid PID, --file IMAGE, --scan or --listen PATH (see --help)');
  return providers;
}

/** Refreshes every provider once; on failure closes them all and rethrows. */
export async function openProviders(providers: readonly SourceProvider[]): Promise<void> {
  try {
    for (const provider of providers) await provider.refresh();
  } catch (error) {
    await closeProviders(providers);
    throw error;
  }
}

/** Closes every provider, even when one of them fails; the first failure is rethrown. */
export async function closeProviders(providers: readonly SourceProvider[]): Promise<void> {
  const results = await Promise.allSettled(providers.map((provider) => provider.close()));
  const failed = results.find((result): result is PromiseRejectedResult => result.status === 'rejected');
  if (failed) throw failed.reason;
}
