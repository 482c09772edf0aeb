/**
 * The sustained load: a fleet of stats fds collected at a fixed rate for a while, and the CPU
 * time the whole process used meanwhile (process.cpuUsage: every thread, the garbage
 * collector's included) as a share of one core.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { KvmStatsProducer } from '../otel/producer.js';
import { VmFleet } from './fleet.js';
import { type Summary, summarize } from './samples.js';

export interface SustainedOptions {
  readonly fds: number;
  readonly vcpus: number;
  /** Collections per second. */
  readonly hz: number;
  readonly seconds: number;
  readonly reuseDataPoints: boolean;
}

export interface SustainedResult {
  readonly fds: number;
  readonly hz: number;
  readonly seconds: number;
  readonly collections: number;
  /** Ticks skipped because the previous collection was still running. */
  readonly missed: number;
  readonly cpuPercentOfOneCore: number;
  readonly collectMs: Summary;
}

export async function runSustained(options: SustainedOptions): Promise<SustainedResult> {
  const fleet = VmFleet.create({ vms: options.fds / (1 + options.vcpus), vcpus: options.vcpus, namePrefix: 'bench' });
  try {
    const producer = new KvmStatsProducer({ sources: fleet.sources, reuseDataPoints: options.reuseDataPoints });
    const collect = async (): Promise<void> => {
      const { errors } = await producer.collect();
      if (errors.length > 0) throw new Error(`collecting the fleet failed: ${String(errors[0])}`);
    };
    for (let i = 0; i < 20; i++) await collect();
    const periodMs = 1000 / options.hz;
    const durations: number[] = [];
    let missed = 0;
    const cpuBefore = process.cpuUsage();
    const began = performance.now();
    const end = began + options.seconds * 1000;
    for (let tick = 0; ; tick++) {
      const due = began + tick * periodMs;
      if (due >= end) break;
      const wait = due - performance.now();
      if (wait > 0) await sleep(wait);
      else if (tick > 0 && -wait >= periodMs) {
        missed++;
        continue;
      }
      const start = performance.now();
      await collect();
      durations.push(performance.now() - start);
    }
    const wallMs = performance.now() - began;
    const cpu = process.cpuUsage(cpuBefore);
    return {
      fds: options.fds,
      hz: options.hz,
      seconds: wallMs / 1000,
      collections: durations.length,
      missed,
      cpuPercentOfOneCore: ((cpu.user + cpu.system) / 1000 / wallMs) * 100,
      collectMs: summarize(durations),
    };
  } finally {
    await fleet.close();
  }
}
