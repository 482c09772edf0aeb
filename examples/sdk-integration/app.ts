/**
 * An application that already has an OpenTelemetry metrics setup (its own MeterProvider,
 * exporter and instruments) and adds KVM stats: the lines marked "KVM" are all it takes.
 *
 *   npm run build && node --import tsx examples/sdk-integration/app.ts
 */
import { metrics } from '@opentelemetry/api';
import {
  ConsoleMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
  type PushMetricExporter,
} from '@opentelemetry/sdk-metrics';
import { DemoProvider, KvmStatsProducer, observeKvmStats, sourcesOf } from 'kvm-stats-otel';

export interface App {
  readonly provider: MeterProvider;
  readonly reader: PeriodicExportingMetricReader;
  handleRequest(): void;
  stop(): Promise<void>;
}

export async function startApp(exporter: PushMetricExporter, exportIntervalMillis = 10_000): Promise<App> {
  // KVM: the VMs to watch. Here a demo VM; for a VMM's, new ProcessProvider(pid), or
  // new ScanProvider() for every VMM on the host.
  const kvm = new DemoProvider({ vcpus: 2 });
  await kvm.refresh();

  const reader = new PeriodicExportingMetricReader({
    exporter,
    exportIntervalMillis,
    metricProducers: [new KvmStatsProducer({ sources: sourcesOf([kvm]) })], // KVM: every stat, histograms too
  });
  const provider = new MeterProvider({ readers: [reader] });
  metrics.setGlobalMeterProvider(provider);

  // The application's own instruments, as before.
  const meter = metrics.getMeter('my-app');
  const requests = meter.createCounter('app.requests', { description: 'Requests handled' });

  // KVM, the API-only way: counters and gauges as observable instruments on the app's meter,
  // so its Views apply. (Use this or the producer; both here to show each.)
  const instruments = observeKvmStats(meter, { sources: kvm.sources().slice(0, 1) });

  return {
    provider,
    reader,
    handleRequest: () => requests.add(1, { route: '/' }),
    async stop() {
      instruments.close();
      await provider.shutdown();
      await kvm.close(); // KVM: stops the VM, closes every fd
    },
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const app = await startApp(new ConsoleMetricExporter(), 2_000);
  const timer = setInterval(() => app.handleRequest(), 100);
  setTimeout(async () => {
    clearInterval(timer);
    await app.stop();
  }, 5_000);
}
