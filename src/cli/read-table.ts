/**
 * What `read` prints: every stat of every source as the kernel states it, its value, and the
 * metric it becomes (views/stat-reports.ts reportSource), as a table for people.
 */
import type { SourceReport } from '../views/stat-reports.js';

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
