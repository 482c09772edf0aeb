/**
 * --console's lines (src/agent/line-metric-exporter.ts): one per data point, and what came from
 * outside in them (a VMM's -name, a sender's attributes) shown escaped: a line cannot write into
 * the terminal it is printed on.
 */
import { ValueType } from '@opentelemetry/api';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { AggregationTemporality, DataPointType, type ResourceMetrics } from '@opentelemetry/sdk-metrics';
import { describe, expect, it } from 'vitest';
import { exportLines } from '../../src/agent/line-metric-exporter.js';

describe('the console lines', () => {
  it('show attribute keys and values from outside escaped', () => {
    const metrics: ResourceMetrics = {
      resource: resourceFromAttributes({}),
      scopeMetrics: [
        {
          scope: { name: 's' },
          metrics: [
            {
              descriptor: { name: 'kvm.vcpu.exits', description: '', unit: '{exit}', valueType: ValueType.INT },
              aggregationTemporality: AggregationTemporality.CUMULATIVE,
              dataPointType: DataPointType.SUM,
              isMonotonic: true,
              dataPoints: [{ startTime: [0, 0], endTime: [0, 0], attributes: { 'kvm.vm.name': 'web\x1b]0;owned\x07', 'site\x1b[2J': 'a\u202eb' }, value: 7 }],
            },
          ],
        },
      ],
    };
    const [, line] = exportLines(metrics, new Date(0));
    expect(line).toBe('kvm.vcpu.exits{kvm.vm.name=web\\x1b]0;owned\\x07,site\\x1b[2J=a\\u202eb} sum {exit} 7');
  });
});
