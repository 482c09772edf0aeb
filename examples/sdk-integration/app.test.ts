/** The SDK integration example, run against a real MeterProvider with an in-memory exporter. */
import { AggregationTemporality, DataPointType, InMemoryMetricExporter } from '@opentelemetry/sdk-metrics';
import { expect, it } from 'vitest';
import { describeKvm } from '../../test/helpers/kvm.js';
import { startApp } from './app.js';

describeKvm('examples/sdk-integration (real KVM)', () => {
  it('exports the app\'s own metrics and the KVM stats together', async () => {
    const exporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
    const app = await startApp(exporter, 3_600_000);
    try {
      app.handleRequest();
      app.handleRequest();
      await app.reader.forceFlush();
      const scopes = exporter.getMetrics()[0]!.scopeMetrics;
      const byScope = Object.fromEntries(scopes.map((s) => [s.scope.name, s.metrics.map((m) => m.descriptor.name)]));
      expect(byScope['my-app']).toEqual(expect.arrayContaining(['app.requests', 'kvm.vm.pages_4k', 'kvm.vm.remote_tlb_flush']));
      expect(byScope['kvm-stats-otel']).toEqual(expect.arrayContaining(['kvm.vcpu.exits', 'kvm.vcpu.halt_wait_hist', 'kvm.vm.pages_4k']));
      const requests = scopes.flatMap((s) => s.metrics).find((m) => m.descriptor.name === 'app.requests')!;
      expect(requests.dataPoints[0]!.value).toBe(2);
      const hist = scopes.flatMap((s) => s.metrics).find((m) => m.descriptor.name === 'kvm.vcpu.halt_wait_hist')!;
      expect(hist.dataPointType).toBe(DataPointType.HISTOGRAM);
      expect(hist.dataPoints).toHaveLength(2);
    } finally {
      await app.stop();
    }
  });
});
