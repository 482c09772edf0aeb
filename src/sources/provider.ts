/**
 * Providers keep a changing set of sources open: a demo VM, a process's fds, saved images,
 * and whatever else finds stats fds. The agent holds a list of providers and asks them for
 * their sources at every collection; this is the one interface a new way in implements.
 */
import { DemoVm, type DemoVmOptions } from './demo.js';
import { type SavedStats, openSaved } from './image.js';
import { HeldProcesses } from './held-process.js';
import { copyProcessStats, statsLinksOf } from './process-stats.js';
import type { ProblemReporter } from './problem.js';
import { type StatsSource, closeSources } from './source.js';

export type { Problem, ProblemKind, ProblemReporter } from './problem.js';

export interface SourceProvider {
  /** What it reads, for logs: "demo VM (2 vCPUs)", "process 1234", "image a.kvmstats". */
  readonly description: string;
  /**
   * Opens new fds and closes those whose VM is gone. Called once before the first collection,
   * then on the agent's rescan interval. Problems with single fds are reported, not thrown;
   * it throws only when the provider cannot work at all (no /dev/kvm for the demo VM).
   */
  refresh(): Promise<void>;
  /**
   * False once refresh() can change nothing more (a saved file opened, a process's fds copied,
   * the demo VM started: what they give can then only go), and the agent stops calling it.
   * Absent or true: refreshed on every rescan. With 10,000 `--file` images, awaiting each one's
   * empty refresh every second was four fifths of the heap the agent allocated (4.5 MB a second).
   */
  readonly needsRefresh?: boolean;
  /** The sources open now. The same object for the same fd across calls, and the same array
   * while the set is unchanged: a changed set is a new array, never the old one changed in
   * place (sourcesOf recomputes its union only when a provider's array is new). */
  sources(): readonly StatsSource[];
  /** Closes every fd it opened. */
  close(): Promise<void>;
}

/** The demo VM: made on the first refresh, stopped on close. */
export class DemoProvider implements SourceProvider {
  readonly description: string;
  #demo: DemoVm | undefined;

  constructor(private readonly options: DemoVmOptions = {}) {
    this.description = `demo VM (${options.vcpus ?? 2} vCPUs)`;
  }

  async refresh(): Promise<void> {
    this.#demo ??= await DemoVm.start(this.options);
  }

  get needsRefresh(): boolean {
    return this.#demo === undefined;
  }

  sources(): readonly StatsSource[] {
    return this.#demo?.sources ?? [];
  }

  /** The running demo VM, once refreshed. */
  get demo(): DemoVm | undefined {
    return this.#demo;
  }

  async close(): Promise<void> {
    await this.#demo?.stop();
    this.#demo = undefined;
  }
}

/** The stats fds one process holds, copied once; all closed when the process exits. */
export class ProcessProvider implements SourceProvider {
  readonly description: string;
  readonly #held: HeldProcesses;
  #opened = false;

  constructor(
    private readonly pid: number,
    private readonly report: ProblemReporter = () => undefined,
  ) {
    this.description = `process ${pid}`;
    this.#held = new HeldProcesses({ report });
  }

  async refresh(): Promise<void> {
    if (this.#opened) return;
    this.#opened = true;
    const { links, problem } = statsLinksOf(this.pid);
    if (problem) return this.report(problem);
    // The copies are made through the pidfd that watches the process from now on.
    const held = this.#held.add(this.pid);
    const found = copyProcessStats(held, links);
    found.problems.forEach(this.report);
    found.sources.forEach((source, i) => held.hold(i, { source }));
    if (found.sources.length === 0) this.#held.drop(held);
  }

  get needsRefresh(): boolean {
    return !this.#opened;
  }

  /** Checked at every collection: a copied fd keeps the VM alive in the kernel, so let go as
   * soon as the VMM is gone. */
  sources(): readonly StatsSource[] {
    this.#held.reap();
    return this.#held.sources();
  }

  async close(): Promise<void> {
    this.#held.close();
  }
}

/** A saved stats image (`read --save`: the same values at every collection), or a recording
 * (`record`: replayed in a loop at its pace, each recorded fd read with one pread as a live one
 * is), each with the identity saved with it. */
export class ImageProvider implements SourceProvider {
  #saved: SavedStats | undefined;

  constructor(private readonly path: string) {}

  /** "image PATH", or once opened a recording's "recording PATH (synthetic stand-in ...)".
   * Made when asked (logs), not kept: one string less per image. */
  get description(): string {
    return this.#saved?.description ?? `image ${this.path}`;
  }

  async refresh(): Promise<void> {
    if (this.#saved) return;
    this.#saved = openSaved(this.path);
  }

  get needsRefresh(): boolean {
    return this.#saved === undefined;
  }

  sources(): readonly StatsSource[] {
    return this.#saved?.sources() ?? [];
  }

  async close(): Promise<void> {
    this.#saved?.close();
    this.#saved = undefined;
  }
}

/** What sets a source's series apart: its owner, VM name and kernel id. Not kept per source:
 * the union is made again only when a provider's list changed, and kept keys came to about
 * 130 bytes per fd. */
function identity(source: StatsSource): string {
  return `${source.pid}|${source.vmName}|${source.file.id}`;
}

/** Every provider's sources as one set; what it gave last, without asking the providers. */
export interface ProvidersSources {
  (): readonly StatsSource[];
  /** The set as the last call gave it (a first call is made if none was): the figures of the
   * collection that asked last, for its self-telemetry. */
  readonly last: readonly StatsSource[];
}

/** The union of the providers' lists, the first provider's source kept where two hold the same. */
function unionOf(lists: readonly (readonly StatsSource[])[]): readonly StatsSource[] {
  const nonEmpty = lists.filter((list) => list.length > 0);
  if (nonEmpty.length <= 1) return [...(nonEmpty[0] ?? [])];
  const seen = new Set<string>();
  return nonEmpty.flat().filter((source) => {
    const key = identity(source);
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/**
 * Every provider's sources as one set, for KvmStatsProducer's `sources` option. When two
 * providers hold the same VM or vCPU (a QEMU with the preload helper is both scanned and handed
 * over), the first one's is kept: two would write the same series twice. The union is made again
 * only when a provider's array changed (each gives the same array while its set is unchanged):
 * with 10,000 `--file` images, deduplicating at every collection cost more than reading them.
 */
export function sourcesOf(providers: readonly SourceProvider[]): ProvidersSources {
  const lists: (readonly StatsSource[])[] = [];
  let union: readonly StatsSource[] | undefined;
  const current = (): readonly StatsSource[] => {
    let changed = union === undefined;
    for (let i = 0; i < providers.length; i++) {
      const list = providers[i]!.sources();
      if (list !== lists[i]) {
        lists[i] = list;
        changed = true;
      }
    }
    if (changed) union = unionOf(lists);
    return union!;
  };
  return Object.defineProperty(current, 'last', { get: () => union ?? current() }) as ProvidersSources;
}
