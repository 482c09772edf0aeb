/**
 * What `read` prints: every stat of every source as the kernel states it, its value, and the
 * metric it becomes. JSON for programs, a table for people.
 */
import type { StatsSource } from '../sources/source.js';
import { type UnitMode, mapTable } from '../otel/mapping.js';

export interface StatReport {
  name: string;
  type: string;
  unit: string;
  base: number;
  exponent: number;
  size: number;
  bucketSize: number;
  /** A number, or bucket counts; a decimal string for a value above 2^53. */
  value: number | string | (number | string)[];
  otel: { name: string; kind: string; unit: string; bounds?: number[] };
}

export interface SourceReport {
  id: string;
  target: 'vm' | 'vcpu';
  pid: number | null;
  vcpu: number | null;
  vmName: string | null;
  origin: string;
  stats: StatReport[];
  skipped: { name: string; reason: string }[];
}

function json(value: number | bigint): number | string {
  return typeof value === 'bigint' ? value.toString() : value;
}

/** Reads `source` once (one pread) and reports every stat. */
export function reportSource(source: StatsSource, units: UnitMode): SourceReport {
  const { file } = source;
  file.read();
  const { metrics } = mapTable(file.table, file.target, units);
  return {
    id: file.id,
    target: file.target,
    pid: source.pid ?? null,
    vcpu: file.vcpuId ?? null,
    vmName: source.vmName ?? null,
    origin: source.origin,
    stats: metrics.map(({ stat, name, kind, unit, bounds }) => ({
      name: stat.name,
      type: stat.type,
      unit: stat.unit,
      base: stat.base,
      exponent: stat.exponent,
      size: stat.size,
      bucketSize: stat.bucketSize,
      value: kind === 'histogram'
        ? Array.from({ length: stat.size }, (_, bucket) => json(file.exactValue(stat, bucket)))
        : json(file.exactValue(stat)),
      otel: { name, kind, unit, ...(bounds ? { bounds: [...bounds] } : {}) },
    })),
    skipped: [...file.table.skipped],
  };
}

function histogramText(counts: (number | string)[]): string {
  const total = counts.reduce<bigint>((sum, c) => sum + BigInt(c), 0n);
  const nonZero = counts.flatMap((c, bucket) => (BigInt(c) > 0n ? [`${bucket}:${c}`] : []));
  return `count ${total}${nonZero.length ? `  buckets ${nonZero.join(' ')}` : ''}`;
}

/** The readable form: one block per source, one line per stat. */
export function renderTable(reports: readonly SourceReport[]): string {
  const lines: string[] = [];
  for (const report of reports) {
    const who = [
      report.target === 'vcpu' ? `vCPU ${report.vcpu}` : 'VM',
      report.vmName !== null ? `vm ${report.vmName}` : '',
      report.pid !== null ? `pid ${report.pid}` : '',
      `(${report.id}, ${report.origin})`,
    ].filter(Boolean);
    lines.push(who.join('  '));
    const nameWidth = Math.max(...report.stats.map((s) => s.otel.name.length), 10);
    for (const stat of report.stats) {
      const value = Array.isArray(stat.value) ? histogramText(stat.value) : String(stat.value);
      lines.push(`  ${stat.otel.name.padEnd(nameWidth)}  ${stat.otel.kind.padEnd(9)}  ${stat.otel.unit.padEnd(7)}  ${value}`);
    }
    for (const skipped of report.skipped) lines.push(`  (skipped ${skipped.name}: ${skipped.reason})`);
    lines.push('');
  }
  return lines.join('\n');
}
