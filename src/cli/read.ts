/** `kvm-stats-otel read`: read stats fds once and print them, or save their images. */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Command } from 'commander';
import type { SourceOptions } from '../setup/open-sources.js';
import type { UnitMode } from '../otel/mapping.js';
import { type SourceReport, reportSource } from '../views/stat-reports.js';
import { DEMO_MAX_VCPUS } from '../sources/demo.js';
import { imageFileName } from '../sources/image.js';
import { identityJson, identityPath } from '../sources/recording.js';
import type { StatsSource } from '../sources/source.js';
import { addSourceOptions, integerOption, unitsOption } from './flags.js';
import { renderTable } from './read-table.js';
import { withSources } from './with-sources.js';
import { terminalLines, terminalText } from '../views/terminal.js';

interface ReadOptions extends SourceOptions {
  vcpus?: number;
  wait: number;
  save?: string;
  json?: boolean;
  units: UnitMode;
}

export function readCommand(): Command {
  return addSourceOptions(new Command('read').description('read KVM stats fds once and print every stat with the metric it becomes'))
    .option('--vcpus <n>', 'vCPUs of the demo VM (the same as --demo N)', integerOption(1, DEMO_MAX_VCPUS))
    .option('--wait <ms>', 'let the demo guest run this long before reading', integerOption(0, 60_000), 500)
    .option('--save <dir>', 'write each stats fd\'s image into DIR, with its owner\'s identity beside it (NAME.kvmstats.json), for --file')
    .option('--json', 'print one JSON document')
    .addOption(unitsOption())
    .action(async (options: ReadOptions) => {
      await read(options);
    });
}

async function read(options: ReadOptions): Promise<void> {
  if (options.vcpus !== undefined && options.demo !== undefined) options.demo = options.vcpus;
  await withSources(options, async (open) => {
    if (options.demo !== undefined) await sleep(options.wait);
    const sources = open.sources();
    if (options.save) save(sources, options.save);
    const reports: SourceReport[] = sources.map((source) => reportSource(source, options.units));
    process.stdout.write(options.json ? `${JSON.stringify({ sources: reports })}\n` : terminalLines(renderTable(reports)));
  });
}

/** Each source's image as the kernel serves it, and beside it who owns it (the raw image has
 * no room for that): --file gives the same series back, not anonymous ones. */
function save(sources: readonly StatsSource[], dir: string): void {
  mkdirSync(dir, { recursive: true });
  const now = Date.now();
  for (const source of sources) {
    const path = join(dir, imageFileName(source));
    writeFileSync(path, source.file.image());
    writeFileSync(identityPath(path), identityJson(source, now));
    process.stderr.write(`kvm-stats-otel: saved ${source.file.id} to ${terminalText(path)}\n`);
  }
}
