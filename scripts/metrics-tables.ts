/**
 * What the measurement scripts share: the descriptor tables of docs/metrics.md (a real kernel's
 * VM and vCPU stats) as image descriptors with idle values, and the CPU time of one pass.
 */
import { readFileSync } from 'node:fs';
import {
  KVM_STATS_BASE_POW10,
  KVM_STATS_BASE_POW2,
  KVM_STATS_TYPE_CUMULATIVE,
  KVM_STATS_TYPE_INSTANT,
  KVM_STATS_TYPE_LINEAR_HIST,
  KVM_STATS_TYPE_LOG_HIST,
  KVM_STATS_TYPE_PEAK,
  KVM_STATS_UNIT_BOOLEAN,
  KVM_STATS_UNIT_BYTES,
  KVM_STATS_UNIT_CYCLES,
  KVM_STATS_UNIT_NONE,
  KVM_STATS_UNIT_SECONDS,
} from '../src/abi/kvm.js';
import type { DescSpec } from '../test/helpers/image.js';

const TYPES: Record<string, number> = {
  cumulative: KVM_STATS_TYPE_CUMULATIVE,
  instant: KVM_STATS_TYPE_INSTANT,
  peak: KVM_STATS_TYPE_PEAK,
  'linear-histogram': KVM_STATS_TYPE_LINEAR_HIST,
  'log2-histogram': KVM_STATS_TYPE_LOG_HIST,
};
const UNITS: Record<string, number> = {
  none: KVM_STATS_UNIT_NONE,
  bytes: KVM_STATS_UNIT_BYTES,
  seconds: KVM_STATS_UNIT_SECONDS,
  cycles: KVM_STATS_UNIT_CYCLES,
  boolean: KVM_STATS_UNIT_BOOLEAN,
};

export const METRICS_MARKDOWN = readFileSync(new URL('../docs/metrics.md', import.meta.url), 'utf8');

/**
 * The descriptor table under `heading` of docs/metrics.md (`| stat | type | unit | base | exp |
 * size | bucket size | ...`), with idle values (counters and buckets of a few thousand, as a
 * guest that ran a while leaves them) moved on by `tick`.
 */
export function tableOf(heading: '## VM stats' | '## vCPU stats', tick = 0, markdown = METRICS_MARKDOWN): DescSpec[] {
  const section = markdown.slice(markdown.indexOf(heading));
  const rows = section.slice(section.indexOf('| stat | type |')).split('\n').slice(2);
  const descs: DescSpec[] = [];
  for (const row of rows) {
    if (!row.startsWith('| ')) break;
    const [name, type, unit, base, exponent, size, bucketSize] = row.split('|').slice(1).map((cell) => cell.trim());
    const count = Number(size);
    const values = Array.from({ length: count }, (_, i) => (type!.endsWith('histogram') ? (i < 12 ? 1000 + i + tick : 0) : 123_456 + i + tick));
    descs.push({ name: name!, type: TYPES[type!]!, unit: UNITS[unit!]!, base: base === '2' ? KVM_STATS_BASE_POW2 : KVM_STATS_BASE_POW10, exponent: Number(exponent), size: count, bucketSize: bucketSize === '' ? 0 : Number(bucketSize), values });
  }
  if (descs.length === 0) throw new Error(`docs/metrics.md has no descriptor table under ${heading}`);
  return descs;
}

/** CPU time of one pass, in ms. */
export async function cpuOf(step: () => unknown): Promise<number> {
  const before = process.cpuUsage();
  await step();
  const used = process.cpuUsage(before);
  return (used.user + used.system) / 1000;
}

export const median = (list: number[]): number => [...list].sort((a, b) => a - b)[Math.floor(list.length / 2)]!;
