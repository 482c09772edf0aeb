import { KvmStatsProducer } from '../src/otel/producer.js';
import { fleetSources, imageFleet, kernelLayout } from './image-fleet.js';
const fleet = imageFleet(2000, 4, kernelLayout());
const producer = new KvmStatsProducer({ sources: fleetSources(fleet), reuseDataPoints: true });
let { resourceMetrics } = await producer.collect();
for (let i = 0; i < 3; i++) ({ resourceMetrics } = await producer.collect());
const metrics = resourceMetrics.scopeMetrics[0]!.metrics;
function walk(mode: number): number {
  let sum = 0;
  for (const metric of metrics) {
    const points = metric.dataPoints as any[];
    for (let i = 0; i < points.length; i++) {
      const p = points[i];
      if (mode >= 1) sum += p.attributes === undefined ? 1 : 0;
      if (mode >= 2) sum += p.startTime[0];
      if (mode >= 3) sum += typeof p.value === 'number' ? p.value : p.value.count;
    }
  }
  return sum;
}
for (const mode of [0, 1, 2, 3, 0, 1, 2, 3]) {
  const t: number[] = [];
  for (let k = 0; k < 7; k++) { const s = process.hrtime.bigint(); walk(mode); t.push(Number(process.hrtime.bigint() - s) / 1e6); }
  t.sort((a, b) => a - b); console.log(mode, t[0]!.toFixed(1), t[3]!.toFixed(1));
}
