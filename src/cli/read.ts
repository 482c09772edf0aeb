/** `kvm-stats-otel read`: read stats fds once and print them, or save their images. */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Command, Option } from 'commander';
import type { UnitMode } from '../otel/mapping.js';
import { DEMO_MAX_VCPUS } from '../sources/demo.js';
import { imageFileName } from '../sources/image.js';
import { DemoProvider, ImageProvider, ProcessProvider, type SourceProvider, sourcesOf } from '../sources/provider.js';
import type { StatsSource } from '../sources/source.js';
import { collect, integerOption, pidOption } from './options.js';
import { type SourceReport, renderTable, reportSource } from './report.js';
import { UsageError } from './errors.js';

interface ReadOptions {
  demo?: boolean;
  vcpus: number;
  wait: number;
  pid?: number[];
  file?: string[];
  save?: string;
  json?: boolean;
  units: UnitMode;
}

export function readCommand(): Command {
  return new Command('read')
    .description('read KVM stats fds once and print every stat with the metric it becomes')
    .option('--demo', 'read a demo VM made here (needs /dev/kvm)')
    .option('--vcpus <n>', 'vCPUs of the demo VM', integerOption(1, DEMO_MAX_VCPUS), 2)
    .option('--wait <ms>', 'let the demo guest run this long before reading', integerOption(0, 60_000), 500)
    .option('--pid <pid>', 'copy the stats fds process PID holds (repeatable; same uid or CAP_SYS_PTRACE)', collect(pidOption))
    .option('--file <image>', 'read a saved stats image (repeatable)', collect(String))
    .option('--save <dir>', 'write each stats fd\'s image into DIR, for read --file')
    .option('--json', 'print one JSON document')
    .addOption(new Option('--units <mode>', 'exact keeps integers (ns, KiBy); base converts to s and By').choices(['exact', 'base']).default('exact'))
    .action(async (options: ReadOptions, command: Command) => {
      await read(options, command);
    });
}

async function read(options: ReadOptions, command: Command): Promise<void> {
  if (!options.demo && !options.pid && !options.file) {
    throw new UsageError(`say what to read: --demo, --pid PID or --file IMAGE (see ${command.name()} --help)`);
  }
  const report = (problem: string): void => void process.stderr.write(`kvm-stats-otel: ${problem}\n`);
  const providers: SourceProvider[] = [
    ...(options.file ?? []).map((path) => new ImageProvider(path)),
    ...(options.pid ?? []).map((pid) => new ProcessProvider(pid, report)),
    ...(options.demo ? [new DemoProvider({ vcpus: options.vcpus })] : []),
  ];
  try {
    for (const provider of providers) await provider.refresh();
    if (options.demo) await sleep(options.wait);
    const sources = sourcesOf(providers)();
    if (sources.length === 0) throw new Error('no stats fd could be read');
    if (options.save) save(sources, options.save);
    const reports: SourceReport[] = sources.map((source) => reportSource(source, options.units));
    process.stdout.write(options.json ? `${JSON.stringify({ sources: reports })}\n` : renderTable(reports));
  } finally {
    for (const provider of providers) await provider.close();
  }
}

function save(sources: readonly StatsSource[], dir: string): void {
  mkdirSync(dir, { recursive: true });
  for (const source of sources) {
    const path = join(dir, imageFileName(source));
    writeFileSync(path, source.file.image());
    process.stderr.write(`kvm-stats-otel: saved ${source.file.id} to ${path}\n`);
  }
}
