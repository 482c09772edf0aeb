/**
 * What skipping the decode of unchanged data blocks would save and cost (numbers for the
 * README): per pass over an idle fleet, in CPU time (process.cpuUsage, so that a loaded
 * machine's waits do not count), the pread floor; the floor plus a compare of each block with a
 * kept copy (all equal: an idle fleet); the same where every block differs and is copied (a
 * busy fleet: the compare's cost on top of a full decode); and collect().
 *
 *   node --import tsx scripts/measure-skip.ts [--vms 500] [--passes 200]
 */
import { parseArgs } from 'node:util';
import { VmFleet } from '../src/bench/fleet.js';
import { pread } from '../src/native/libc.js';
import { KvmStatsProducer } from '../src/otel/producer.js';

const { values } = parseArgs({ options: { vms: { type: 'string', default: '500' }, passes: { type: 'string', default: '200' } } });
const vms = Number(values.vms);
const passes = Number(values.passes);
const fleet = VmFleet.create({ vms, vcpus: 4, namePrefix: 'skip' });
const files = fleet.sources.map((s) => s.file);
const scratch = Buffer.alloc(Math.max(...files.map((f) => f.table.dataSize)));
const kept = files.map((f) => Buffer.alloc(f.table.dataSize));
const producer = new KvmStatsProducer({ sources: fleet.sources, reuseDataPoints: true });

const floor = (): void => {
  for (const file of files) pread(file.fd, scratch, file.table.dataSize, file.header.dataOffset);
};
/** `differ`: make every kept block differ first, as a busy fleet's would. */
const floorCompare = (differ: boolean) => (): void => {
  for (let i = 0; i < files.length; i++) {
    const file = files[i]!;
    const size = file.table.dataSize;
    const block = kept[i]!;
    if (differ) block[0]! ^= 0xff;
    pread(file.fd, scratch, size, file.header.dataOffset);
    if (scratch.compare(block, 0, size, 0, size) !== 0) scratch.copy(block, 0, 0, size);
  }
};
const collect = async (): Promise<void> => {
  const { errors } = await producer.collect();
  if (errors.length > 0) throw new Error(String(errors[0]));
};

async function cpuPerPass(step: () => unknown): Promise<number> {
  for (let i = 0; i < 20; i++) await step();
  const before = process.cpuUsage();
  for (let i = 0; i < passes; i++) await step();
  const used = process.cpuUsage(before);
  return (used.user + used.system) / 1000 / passes;
}

try {
  const rows: [string, number][] = [];
  for (let round = 0; round < 3; round++) {
    rows.push(['floor', await cpuPerPass(floor)]);
    rows.push(['floor + compare, unchanged', await cpuPerPass(floorCompare(false))]);
    rows.push(['floor + compare + copy, changed', await cpuPerPass(floorCompare(true))]);
    rows.push(['collect()', await cpuPerPass(collect)]);
  }
  const byName = new Map<string, number[]>();
  for (const [name, ms] of rows) byName.set(name, [...(byName.get(name) ?? []), ms]);
  for (const [name, list] of byName) console.log(`${files.length} fds, ${name}: ${Math.min(...list).toFixed(2)} ms of CPU a pass (best of 3 rounds of ${passes}; all: ${list.map((v) => v.toFixed(2)).join(', ')})`);
} finally {
  fleet.close();
}
