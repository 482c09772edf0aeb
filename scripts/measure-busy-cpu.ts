/**
 * Whether collect() + this package's OTLP protobuf encoding costs more when every value changes
 * (numbers for the README): CPU time (process.cpuUsage, not wall time: the machine is shared)
 * per collection and encoding over 2,500 stats fds, on a busy fleet with a guest turn before
 * each (every vCPU block changed) and without (unchanged), and on an idle fleet with and
 * without 64 MB of memory traffic before each (caches evicted as a guest turn would).
 *
 *   node --import tsx scripts/measure-busy-cpu.ts [--vms 500] [--runs 30]
 */
import { parseArgs } from 'node:util';
import { VmFleet } from '../src/bench/fleet.js';
import { OtlpProtobufEncoder } from '../src/exporters/otlp-protobuf.js';
import { KvmStatsProducer } from '../src/otel/producer.js';

const { values } = parseArgs({ options: { vms: { type: 'string', default: '500' }, runs: { type: 'string', default: '30' } } });
const vms = Number(values.vms);
const runs = Number(values.runs);
const busy = await VmFleet.createBusy({ vms, vcpus: 4, namePrefix: 'busy' });
const idle = VmFleet.create({ vms, vcpus: 4, namePrefix: 'idle' });
const traffic = new Float64Array(8 << 20);
const evict = (): void => {
  for (let i = 0; i < traffic.length; i += 8) traffic[i]! += 1;
};

/** Mean CPU ms of one collect() and encoding, with `before` untimed before each. */
async function cpuPerRun(fleet: VmFleet, before: () => unknown): Promise<number> {
  const producer = new KvmStatsProducer({ sources: fleet.sources, reuseDataPoints: true });
  const encoder = new OtlpProtobufEncoder();
  const once = async (): Promise<void> => encoder.release(encoder.encode((await producer.collect()).resourceMetrics));
  for (let i = 0; i < 10; i++) await once();
  let micros = 0;
  for (let i = 0; i < runs; i++) {
    await before();
    const start = process.cpuUsage();
    await once();
    const used = process.cpuUsage(start);
    micros += used.user + used.system;
  }
  return micros / runs / 1000;
}

try {
  const fds = VmFleet.fdCount(vms, 4);
  console.log(`${fds} fds, collect + protobuf (ours), CPU ms each:`);
  console.log(`  busy, a guest turn before each (every vCPU block changed): ${(await cpuPerRun(busy, () => busy.step())).toFixed(1)}`);
  console.log(`  busy, no turn (unchanged): ${(await cpuPerRun(busy, () => undefined)).toFixed(1)}`);
  console.log(`  idle, 64 MB of memory traffic before each: ${(await cpuPerRun(idle, evict)).toFixed(1)}`);
  console.log(`  idle: ${(await cpuPerRun(idle, () => undefined)).toFixed(1)}`);
} finally {
  await busy.close();
  idle.close();
}
