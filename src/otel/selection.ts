/**
 * Which stats are exported: include and exclude patterns per target, `vcpu:halt_*`. A pattern is
 * TARGET:STAT, TARGET `vm` or `vcpu`, STAT the kernel's stat name with `*` (any run of
 * characters) and `?` (one character), or for a vCPU one of its thread's scheduler stats
 * (`vcpu:sched.*`: sched.cpu_time, sched.run_delay, sched.timeslices). Each target is selected on its own: a target without
 * include patterns keeps every stat, one with include patterns keeps only the stats they match;
 * then every stat an exclude pattern matches goes. The default, no patterns, exports every stat.
 *
 * Applied once per descriptor table, when the producer plans it (the observable instruments
 * select the same way): an excluded stat gets no plan, so it costs nothing per collection beyond
 * its share of the one pread. A pattern that matches no stat of a table of its target is
 * reported once per table (a typo should not silently export nothing).
 */
import { diag } from '@opentelemetry/api';
import { SCHEDSTAT_TABLE } from '../sources/schedstat.js';
import type { DescriptorTable, StatsTarget } from '../stats/descriptors.js';
import type { MetricMapping, TableMapping } from './mapping.js';
import { SCOPE_NAME } from './semconv.js';

export interface StatSelectionOptions {
  /** TARGET:STAT patterns; per target, only the stats they match are exported. Default: every stat. */
  readonly include?: readonly string[];
  /** TARGET:STAT patterns of stats not exported, applied after `include`. */
  readonly exclude?: readonly string[];
}

interface StatPattern {
  readonly text: string;
  readonly kind: 'include' | 'exclude';
  readonly target: StatsTarget;
  /** The STAT part, runs of `*` folded into one. */
  readonly glob: string;
}

/** STAT may hold `.`: the vCPU thread's scheduler stats are `sched.cpu_time` and the like. */
const PATTERN = /^(vm|vcpu):([A-Za-z0-9_.*?]+)$/;
/** Longer than any kernel stat name can be (name_size is 48 today); a bound on matching work. */
const MAX_PATTERN_LENGTH = 256;

/**
 * Whether `name` matches `glob` (`*` any run, `?` one character). The greedy scan with one
 * backtrack point costs at most |glob| x |name| steps whatever the pattern: a regular expression
 * built from `*a*a*a...` backtracks exponentially in V8, and a pattern comes from outside.
 */
export function globMatches(glob: string, name: string): boolean {
  let g = 0;
  let n = 0;
  let star = -1;
  let resume = 0;
  while (n < name.length) {
    const c = glob.charCodeAt(g);
    if (g < glob.length && (c === 63 /* ? */ || c === name.charCodeAt(n))) {
      g++;
      n++;
    } else if (g < glob.length && c === 42 /* * */) {
      star = g++;
      resume = n;
    } else if (star >= 0) {
      g = star + 1;
      n = ++resume;
    } else {
      return false;
    }
  }
  while (g < glob.length && glob.charCodeAt(g) === 42) g++;
  return g === glob.length;
}
const TARGET_WORDS: Record<StatsTarget, string> = { vm: 'VM', vcpu: 'vCPU' };
const log = diag.createComponentLogger({ namespace: SCOPE_NAME });

/** `vcpu:halt_*` as a pattern; throws a RangeError that says what a pattern looks like. */
function parsePattern(text: string, kind: StatPattern['kind']): StatPattern {
  if (text.length > MAX_PATTERN_LENGTH) {
    throw new RangeError(`${kind} pattern of ${text.length} characters is longer than ${MAX_PATTERN_LENGTH}: a kernel stat name is at most 47 characters`);
  }
  const match = PATTERN.exec(text.trim());
  if (!match) {
    const hint = /^kvm\.(vm|vcpu)\./.test(text.trim()) ? ` (write ${text.trim().replace(/^kvm\.(vm|vcpu)\./, '$1:')}: patterns name the kernel's stat, not the metric)` : '';
    throw new RangeError(
      `${kind} pattern ${JSON.stringify(text)} is not TARGET:STAT${hint}: TARGET is vm or vcpu, STAT the kernel's stat name with * and ? (e.g. vcpu:halt_*; kvm-stats-otel schema lists the stats)`,
    );
  }
  return { text: text.trim(), kind, target: match[1] as StatsTarget, glob: match[2]!.replace(/\*+/g, '*') };
}

/** Patterns already reported as matching nothing, per table. */
const reportedUnmatched = new WeakMap<DescriptorTable, Set<string>>();

export class StatSelection {
  readonly include: readonly string[];
  readonly exclude: readonly string[];
  readonly #patterns: readonly StatPattern[];

  /** Throws a RangeError naming the first malformed pattern. */
  constructor(options: StatSelectionOptions = {}) {
    this.#patterns = [
      ...(options.include ?? []).map((text) => parsePattern(text, 'include')),
      ...(options.exclude ?? []).map((text) => parsePattern(text, 'exclude')),
    ];
    this.include = this.#patterns.filter((p) => p.kind === 'include').map((p) => p.text);
    this.exclude = this.#patterns.filter((p) => p.kind === 'exclude').map((p) => p.text);
  }

  /** True when every stat is exported (no patterns). */
  get everything(): boolean {
    return this.#patterns.length === 0;
  }

  /** Whether stat `name` of a `target` table is exported. */
  selects(target: StatsTarget, name: string): boolean {
    let included: boolean | undefined;
    for (const p of this.#patterns) {
      if (p.target !== target) continue;
      if (p.kind === 'exclude' && globMatches(p.glob, name)) return false;
      if (p.kind === 'include') included ||= globMatches(p.glob, name);
    }
    return included ?? true;
  }

  /** The metrics of a table's mapping that are exported; reports, once per table, the patterns
   * of its target that match none of its stats. */
  select(mapping: TableMapping, table: DescriptorTable): readonly MetricMapping[] {
    this.#reportUnmatched(table, mapping.target);
    if (this.everything) return mapping.metrics;
    return mapping.metrics.filter((metric) => this.selects(mapping.target, metric.stat.name));
  }

  /** Patterns of `target` that match no stat of `table`, as "include vcpu:exitz". */
  unmatched(table: DescriptorTable, target: StatsTarget): string[] {
    return this.#unmatched(table, target).map((p) => `${p.kind} ${p.text}`);
  }

  /** A vCPU pattern matches when it matches a stat of the vCPU's table or a scheduler stat
   * (`vcpu:sched.*` matches nothing of a KVM table, `vcpu:exits` nothing of SCHEDSTAT_TABLE). */
  #unmatched(table: DescriptorTable, target: StatsTarget): StatPattern[] {
    const matches = (p: StatPattern, t: DescriptorTable) => t.stats.some((stat) => globMatches(p.glob, stat.name));
    return this.#patterns.filter((p) => p.target === target && !matches(p, table) && !(target === 'vcpu' && matches(p, SCHEDSTAT_TABLE)));
  }

  #reportUnmatched(table: DescriptorTable, target: StatsTarget): void {
    // SCHEDSTAT_TABLE's patterns are checked with each vCPU table.
    if (this.everything || table === SCHEDSTAT_TABLE) return;
    let reported = reportedUnmatched.get(table);
    if (!reported) reportedUnmatched.set(table, (reported = new Set()));
    for (const { kind, text } of this.#unmatched(table, target)) {
      const key = `${kind} ${text}`;
      if (reported.has(key)) continue;
      reported.add(key);
      log.warn(
        `KVM stat ${kind} pattern ${text} matches none of the ${table.stats.length} ${TARGET_WORDS[target]} stats of this kernel, so it ${kind === 'include' ? 'selects' : 'excludes'} nothing: check the name (kvm-stats-otel schema lists them)`,
      );
    }
  }
}
