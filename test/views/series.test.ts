/**
 * The series counts `list` and `schema` show (src/views/series.ts) against what the producer
 * exports for the same sources: the shipped recording, whose vCPUs have schedstat tables, per
 * collection in data points and in Prometheus series, with and without VM aggregation.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ResourceMetrics } from '@opentelemetry/sdk-metrics';
import { PrometheusTextSerializer } from '../../src/exporters/prometheus-text.js';
import type { VcpuAggregation } from '../../src/otel/aggregation.js';
import { KvmStatsProducer } from '../../src/otel/producer.js';
import { StatSelection } from '../../src/otel/selection.js';
import { SHIPPED_RECORDING } from '../../src/setup/demo-fallback.js';
import { ImageProvider } from '../../src/sources/provider.js';
import { sourceTables } from '../../src/sources/source.js';
import { hostSeries } from '../../src/views/series.js';

let provider: ImageProvider;

beforeAll(async () => {
  provider = new ImageProvider(SHIPPED_RECORDING);
  await provider.refresh();
});

afterAll(() => provider.close());

function dataPoints(metrics: ResourceMetrics): number {
  return metrics.scopeMetrics.reduce((sum, scope) => sum + scope.metrics.reduce((n, metric) => n + metric.dataPoints.length, 0), 0);
}

/** Prometheus series: a line per sample of the text exposition (comments aside). */
function prometheusSamples(metrics: ResourceMetrics): number {
  const text = [...new PrometheusTextSerializer().chunks(metrics)].map((chunk) => Buffer.from(chunk).toString()).join('');
  return text.split('\n').filter((line) => line !== '' && !line.startsWith('#') && !line.startsWith('target_info')).length;
}

describe('series counts', () => {
  it('the recording has vCPUs with schedstat tables, so the count must include them', () => {
    expect(provider.sources().some((source) => sourceTables(source).length === 2)).toBe(true);
  });

  for (const vcpuAggregation of ['none', 'vm'] as VcpuAggregation[]) {
    it(`match what the producer exports, vcpuAggregation ${vcpuAggregation}`, async () => {
      const sources = provider.sources();
      const selection = new StatSelection();
      const producer = new KvmStatsProducer({ sources, vcpuAggregation, units: 'exact' });
      const { resourceMetrics, errors } = await producer.collect();
      expect(errors).toEqual([]);
      const counted = hostSeries(sources, { selection, vcpuAggregation, units: 'exact' });
      expect(counted.dataPoints).toBe(dataPoints(resourceMetrics));
      expect(counted.prometheusSeries).toBe(prometheusSamples(resourceMetrics));
      if (vcpuAggregation === 'vm') expect(counted.vcpuGroups).toBe(1);
    });
  }
});
