/**
 * Where the agent, `read`, `schema` and `top` get their stats fds: which sources to read in, a
 * list of SourceProviders, each refreshed once, out. A new way in (discovery, a hand-over
 * socket) is one option below and one line in providersFor().
 */
import { HandoverProvider } from '../sources/handover-receiver.js';
import { DemoProvider, ImageProvider, ProcessProvider, type ProblemReporter, type ProvidersSources, type SourceProvider, sourcesOf } from '../sources/provider.js';
import { ScanProvider } from '../sources/scan.js';
import type { StatsSource } from '../sources/source.js';

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

/** No source of stats fds was asked for: the caller's mistake, found before anything is opened. */
export class NoSourcesError extends Error {
  constructor() {
    super('no source of stats fds was given: a demo VM, processes, saved images, a scan or a hand-over socket');
    this.name = 'NoSourcesError';
  }
}

/** The providers the options ask for; a NoSourcesError when they ask for none. */
export function providersFor(options: SourceOptions, report: ProblemReporter): SourceProvider[] {
  const providers: SourceProvider[] = [
    ...(options.file ?? []).map((path) => new ImageProvider(path)),
    ...(options.pid ?? []).map((pid) => new ProcessProvider(pid, report)),
    ...(options.demo !== undefined ? [new DemoProvider({ vcpus: options.demo })] : []),
    ...(options.scan ? [new ScanProvider({ report })] : []),
    ...(options.listen !== undefined ? [new HandoverProvider(options.listen, { report })] : []),
  ];
  if (providers.length === 0) {
    throw new NoSourcesError();
  }
  return providers;
}

/** Providers open for reading, and their sources as one set. */
export interface OpenSources {
  readonly providers: readonly SourceProvider[];
  /** Every provider's sources as one set (sourcesOf), for KvmStatsProducer's `sources`. */
  readonly sources: ProvidersSources;
  /** Closes every provider, even when one of them fails; the first failure is rethrown. */
  close(): Promise<void>;
}

/** The providers the options ask for, each refreshed once; when one fails, all are closed and
 * the failure rethrown. */
export async function openSources(options: SourceOptions, report: ProblemReporter): Promise<OpenSources> {
  const providers = providersFor(options, report);
  const close = () => closeProviders(providers);
  try {
    for (const provider of providers) await provider.refresh();
  } catch (error) {
    await close();
    throw error;
  }
  return { providers, sources: sourcesOf(providers), close };
}

async function closeProviders(providers: readonly SourceProvider[]): Promise<void> {
  const results = await Promise.allSettled(providers.map((provider) => provider.close()));
  const failed = results.find((result): result is PromiseRejectedResult => result.status === 'rejected');
  if (failed) throw failed.reason;
}
