/**
 * `kvm-stats-otel schema`: the descriptor table as the kernel states it beside the metric each
 * stat becomes, under the selection and aggregation given (the agent's flags), and the series
 * that makes per collection for the fds read. docs/metrics.md is this command's Markdown output
 * on a real kernel, so the reference comes from the same definition as the exported metrics.
 */
import { machine, release } from 'node:os';
import { Command, Option } from 'commander';
import { addSelectionOptions, unitsOption } from '../agent/config.js';
import { type SourceOptions, addSourceOptions, closeProviders, openProviders, providersFor } from '../agent/sources.js';
import type { VcpuAggregation } from '../otel/aggregation.js';
import { type UnitMode, mapTable } from '../otel/mapping.js';
import { StatSelection } from '../otel/selection.js';
import { type ExportOptions, type HostSeries, type SeriesCount, hostSeries, seriesOfTable, tableExports } from '../otel/series.js';
import { sourcesOf } from '../sources/provider.js';
import type { StatsSource } from '../sources/source.js';
import { type StatReport, reportSource } from './report.js';
import { reportToStderr } from './hints.js';

interface SchemaOptions extends SourceOptions {
  format: 'markdown' | 'json';
  units: UnitMode;
  include?: string[];
  exclude?: string[];
  vcpuAggregation: VcpuAggregation;
}

/** A stat as the kernel states it and the metric it becomes; under VM aggregation the summed
 * metric, with `max` for a gauge's second one. `exported` false: the selection leaves it out. */
export type SchemaStat = Omit<StatReport, 'value'> & {
  exported: boolean;
  otel: StatReport['otel'] & { description: string; sumFrom: string | null; max?: { name: string; description: string } };
};

export interface SchemaTable {
  target: 'vm' | 'vcpu';
  /** The id of the fd it was read from, e.g. "kvm-1234/vcpu-0". */
  example: string;
  stats: SchemaStat[];
  skipped: { name: string; reason: string }[];
  /** Per collection, from one fd of this table (under VM aggregation, one VM's vCPUs). */
  series: SeriesCount;
  /** Patterns of this target that match none of its stats, as "include vcpu:exitz". */
  unmatched: string[];
}

export interface Schema {
  kernel: { release: string; arch: string };
  units: UnitMode;
  selection: { include: string[]; exclude: string[]; vcpuAggregation: VcpuAggregation };
  tables: SchemaTable[];
  /** Per collection, for every fd read. */
  series: HostSeries;
}

/** One table per target and distinct descriptor table: every vCPU of a kernel shares one. */
export function schemaOf(sources: readonly StatsSource[], options: ExportOptions): Schema {
  const { units, selection, vcpuAggregation } = options;
  const seen = new Set<unknown>();
  const tables: SchemaTable[] = [];
  for (const source of sources) {
    const { file } = source;
    const key = mapTable(file.table, file.target, units);
    if (seen.has(key)) continue;
    seen.add(key);
    const report = reportSource(source, units);
    const exports = tableExports(file.table, file.target, options);
    tables.push({
      target: report.target,
      example: report.id,
      stats: report.stats.map(({ value: _, ...stat }, i) => {
        const { metric, exported, outputs } = exports[i]!;
        const [main = metric, max] = outputs;
        return {
          ...stat,
          exported,
          otel: {
            ...stat.otel,
            name: main.name,
            unit: main.unit,
            description: main.description,
            sumFrom: metric.sumFrom?.name ?? null,
            ...(max ? { max: { name: max.name, description: max.description } } : {}),
          },
        };
      }),
      skipped: report.skipped,
      series: seriesOfTable(exports),
      unmatched: selection.unmatched(file.table, file.target),
    });
  }
  tables.sort((a, b) => (a.target === b.target ? 0 : a.target === 'vm' ? -1 : 1));
  return {
    kernel: { release: release(), arch: machine() },
    units,
    selection: { include: [...selection.include], exclude: [...selection.exclude], vcpuAggregation },
    tables,
    series: hostSeries(sources, options),
  };
}

function boundsText(bounds: readonly number[] | undefined): string {
  if (!bounds) return '';
  if (bounds.length <= 6) return bounds.join(', ');
  return `${bounds.slice(0, 4).join(', ')}, …, ${bounds.at(-1)} (${bounds.length} bounds)`;
}

function cell(text: string | number): string {
  return String(text).replace(/\|/g, '\\|');
}

/** The selection in words: what the flags say, or that every stat goes. */
export function selectionText(selection: { include: readonly string[]; exclude: readonly string[]; vcpuAggregation: VcpuAggregation }): string {
  const include = selection.include.length ? `the stats --include ${selection.include.join(',')} selects` : 'every stat';
  const stats = selection.exclude.length ? `${include} but those --exclude ${selection.exclude.join(',')} matches` : include;
  return `${stats}, ${selection.vcpuAggregation === 'vm' ? 'vCPU series summed per VM (--vcpu-aggregation vm)' : 'a series per vCPU'}`;
}

function count(n: number): string {
  return n.toLocaleString('en-US');
}

export function schemaMarkdown(schema: Schema, command: string): string {
  const aggregated = schema.selection.vcpuAggregation === 'vm';
  const lines = [
    '# KVM stats as OpenTelemetry metrics',
    '',
    `Generated by \`${command}\` on Linux ${schema.kernel.release} (${schema.kernel.arch}), from the`,
    'descriptor tables of the kernel\'s binary stats fds. Another kernel or architecture has other stats:',
    'run the command there. The left columns are the kernel\'s descriptor (type, unit, base, exponent,',
    'size, bucket size); the right ones the metric it becomes (see README.md, "How stats become metrics").',
    `Units: \`${schema.units}\`.`,
  ];
  for (const table of schema.tables) {
    const what = table.target === 'vm' ? 'VM' : 'vCPU';
    const exported = table.stats.filter((s) => s.exported);
    const left = table.stats.filter((s) => !s.exported).map((s) => s.name);
    lines.push(
      '',
      `## ${what} stats (\`kvm.${table.target}.*\`): ${left.length ? `${exported.length} of ${table.stats.length} exported` : table.stats.length}`,
      '',
      `Read from the stats fd \`${table.example.replace(/\d+/, 'TID')}\`.`,
    );
    if (aggregated && table.target === 'vcpu') {
      lines.push(
        'Summed per VM (`--vcpu-aggregation vm`): one series per VM, counters and histogram buckets added',
        'up over its vCPUs, a boolean as the number of vCPUs with it set, any other gauge as its sum and',
        'its largest value (`.max`).',
      );
    }
    lines.push(
      '',
      '| stat | type | unit | base | exp | size | bucket size | metric | kind | metric unit | bounds | sum from |',
      '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
      ...exported.map((s) => {
        const metric = `\`${s.otel.name}\`${s.otel.max ? `, \`${s.otel.max.name}\`` : ''}`;
        return `| ${[s.name, s.type, s.unit, s.base, s.exponent, s.size, s.bucketSize || '', metric, s.otel.kind, `\`${s.otel.unit}\``, boundsText(s.otel.bounds), s.otel.sumFrom ?? (s.otel.kind === 'histogram' ? '(none: no sum)' : '')].map(cell).join(' | ')} |`;
      }),
    );
    if (left.length) lines.push('', `Not exported: ${left.join(', ')}.`);
    if (table.unmatched.length) lines.push('', `Patterns that match no ${what} stat: ${table.unmatched.join(', ')}.`);
    for (const skipped of table.skipped) lines.push('', `Skipped: ${skipped.name}: ${skipped.reason}.`);
  }
  const { series } = schema;
  const vcpuRow = aggregated ? 'a VM\'s vCPUs, summed' : 'a vCPU';
  const plural = (n: number, word: string) => `${count(n)} ${word}${n === 1 ? '' : 's'}`;
  const read = `${plural(series.vmFds, 'VM')}, ${plural(series.vcpuFds, 'vCPU')}${series.vcpuGroups !== null ? ` summed into ${plural(series.vcpuGroups, 'VM')}` : ''}`;
  lines.push(
    '',
    '## Series per collection',
    '',
    `Exported: ${selectionText(schema.selection)}.`,
    'Prometheus has a time series per data point, and for a histogram one per bucket, a count and a sum.',
    '',
    '| from | data points | Prometheus series |',
    '| --- | ---: | ---: |',
    ...schema.tables.map((t) => `| ${t.target === 'vm' ? 'a VM' : vcpuRow} | ${count(t.series.dataPoints)} | ${count(t.series.prometheusSeries)} |`),
    `| the ${plural(series.vmFds + series.vcpuFds, 'stats fd')} read (${read}) | ${count(series.dataPoints)} | ${count(series.prometheusSeries)} |`,
  );
  return `${lines.join('\n')}\n`;
}

function commandLine(options: SchemaOptions): string {
  const source = options.demo !== undefined ? '--demo' : options.pid ? '--pid PID' : '--file IMAGE';
  const selection = [
    ...(options.include?.length ? [`--include ${options.include.join(',')}`] : []),
    ...(options.exclude?.length ? [`--exclude ${options.exclude.join(',')}`] : []),
    ...(options.vcpuAggregation === 'vm' ? ['--vcpu-aggregation vm'] : []),
  ];
  return [`kvm-stats-otel schema ${source} --format markdown`, ...(options.units === 'base' ? ['--units base'] : []), ...selection].join(' ');
}

export function schemaCommand(): Command {
  const command = new Command('schema').description('print the kernel\'s stats descriptors beside the metric each becomes (Markdown or JSON)');
  addSourceOptions(command)
    .addOption(new Option('--format <format>', 'markdown for people (docs/metrics.md), json for programs').choices(['markdown', 'json']).default('markdown'))
    .addOption(unitsOption());
  addSelectionOptions(command);
  return command.action(async (options: SchemaOptions) => {
    const providers = providersFor(options, reportToStderr);
    await openProviders(providers);
    try {
      const sources = sourcesOf(providers)();
      if (sources.length === 0) throw new Error('no stats fd could be read');
      const schema = schemaOf(sources, { units: options.units, selection: new StatSelection(options), vcpuAggregation: options.vcpuAggregation });
      process.stdout.write(options.format === 'json' ? `${JSON.stringify(schema, null, 2)}\n` : schemaMarkdown(schema, commandLine(options)));
    } finally {
      await closeProviders(providers);
    }
  });
}
