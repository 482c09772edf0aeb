/**
 * Providers keep a changing set of sources open: a demo VM, a process's fds, saved images,
 * and whatever else finds stats fds. The agent holds a list of providers and asks them for
 * their sources at every collection; this is the one interface a new way in implements.
 */
import { existsSync } from 'node:fs';
import { DemoVm, type DemoVmOptions } from './demo.js';
import { openImageSource } from './image.js';
import { openProcessStats } from './pid.js';
import { type StatsSource, closeSources } from './source.js';

/** Called with one line (what went wrong and what to do) when something cannot be read. */
export type ProblemReporter = (problem: string) => void;

export interface SourceProvider {
  /** What it reads, for logs: "demo VM (2 vCPUs)", "process 1234", "image a.kvmstats". */
  readonly description: string;
  /**
   * Opens new fds and closes those whose VM is gone. Called once before the first collection,
   * then on the agent's rescan interval. Problems with single fds are reported, not thrown;
   * it throws only when the provider cannot work at all (no /dev/kvm for the demo VM).
   */
  refresh(): Promise<void>;
  /** The sources open now. The same object for the same fd across calls. */
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
  #sources: StatsSource[] = [];
  #opened = false;

  constructor(
    private readonly pid: number,
    private readonly report: ProblemReporter = () => undefined,
  ) {
    this.description = `process ${pid}`;
  }

  async refresh(): Promise<void> {
    if (!this.#opened) {
      this.#opened = true;
      const found = openProcessStats(this.pid);
      this.#sources = found.sources;
      found.problems.forEach(this.report);
    } else if (this.#sources.length > 0 && !existsSync(`/proc/${this.pid}`)) {
      // A copied fd keeps the VM alive in the kernel: let it go as soon as the VMM is gone.
      this.report(`process ${this.pid} exited: closed its ${this.#sources.length} stats fds`);
      await this.close();
    }
  }

  sources(): readonly StatsSource[] {
    return this.#sources;
  }

  async close(): Promise<void> {
    closeSources(this.#sources);
    this.#sources = [];
  }
}

/** A saved stats image: the same values at every collection. */
export class ImageProvider implements SourceProvider {
  readonly description: string;
  #source: StatsSource | undefined;

  constructor(private readonly path: string) {
    this.description = `image ${path}`;
  }

  async refresh(): Promise<void> {
    this.#source ??= openImageSource(this.path);
  }

  sources(): readonly StatsSource[] {
    return this.#source ? [this.#source] : [];
  }

  async close(): Promise<void> {
    if (this.#source) closeSources([this.#source]);
    this.#source = undefined;
  }
}

/** Every provider's sources as one set, for KvmStatsProducer's `sources` option. */
export function sourcesOf(providers: readonly SourceProvider[]): () => StatsSource[] {
  return () => providers.flatMap((provider) => provider.sources());
}
