/**
 * sourcesOf over many providers: the union is made again only when a provider's set changed, and
 * the agent's self-telemetry takes its figures from the set the last collection read instead of
 * asking every provider again (with 10,000 `--file` images both cost more than the reads); a
 * saved image says it needs no refresh once open, so the agent does not call it every rescan.
 */
import { afterEach, expect, it } from 'vitest';
import { SelfTelemetry } from '../../src/agent/telemetry.js';
import { createLogger } from '../../src/agent/log.js';
import { KvmStatsProducer } from '../../src/otel/producer.js';
import { ImageProvider, type SourceProvider, sourcesOf } from '../../src/sources/provider.js';
import type { StatsSource } from '../../src/sources/source.js';
import { buildImage, writeImage } from '../helpers/image.js';

/** A saved image, read by the real provider, that counts how often it is asked for its sources. */
class CountedImage extends ImageProvider {
  calls = 0;
  override sources(): readonly StatsSource[] {
    this.calls++;
    return super.sources();
  }
}

/** A provider whose set the test changes, as a discovery provider's changes: a new array. */
class ChangingProvider implements SourceProvider {
  readonly description = 'changing';
  list: readonly StatsSource[] = [];
  async refresh(): Promise<void> {}
  sources(): readonly StatsSource[] {
    return this.list;
  }
  async close(): Promise<void> {}
}

const opened: SourceProvider[] = [];
afterEach(async () => {
  for (const provider of opened.splice(0)) await provider.close();
});

async function images(count: number, firstPid = 4000): Promise<CountedImage[]> {
  const providers = Array.from({ length: count }, (_, i) => {
    const image = buildImage({ id: `kvm-${firstPid + i}`, descs: [{ name: 'exits', values: [i] }] });
    return new CountedImage(writeImage(image, `vm-${i}`));
  });
  opened.push(...providers);
  for (const provider of providers) await provider.refresh();
  return providers;
}

it('makes the union again only when a provider gives a new array, keeping the first of a duplicate', async () => {
  const fixed = await images(3);
  const changing = new ChangingProvider();
  const set = sourcesOf([...fixed, changing]);
  const first = set();
  expect(first.map((source) => source.file.id)).toEqual(['kvm-4000', 'kvm-4001', 'kvm-4002']);
  // Nothing changed: the very array of the last call, so no deduplication ran.
  expect(set()).toBe(first);
  expect(set()).toBe(first);
  // A provider's set changed: a new union, where the same VM held twice is kept once (the first).
  const again = fixed[1]!.sources()[0]!;
  changing.list = [again];
  const second = set();
  expect(second).not.toBe(first);
  expect(second).toEqual(first);
  const other = (await images(1, 5000))[0]!.sources()[0]!;
  changing.list = [again, other];
  expect(set().map((source) => source.file.id)).toEqual(['kvm-4000', 'kvm-4001', 'kvm-4002', 'kvm-5000']);
  expect(set().at(-1)).toBe(other);
});

it('self-telemetry reads the set the producer read: each provider is asked once per collection', async () => {
  const providers = await images(4);
  const set = sourcesOf(providers);
  const telemetry = new SelfTelemetry(set);
  const producer = telemetry.instrument(new KvmStatsProducer({ sources: set }), 'otlp', createLogger('error'));
  for (let i = 0; i < 3; i++) {
    const result = await producer.collect();
    expect(result.errors).toEqual([]);
  }
  // Before: the producer's call and self-telemetry's own, at every collection.
  for (const provider of providers) expect(provider.calls).toBe(3);
  expect(set.last).toHaveLength(4);
  for (const provider of providers) expect(provider.calls).toBe(3);
});

it('a saved image needs no refresh once open (the agent stops calling it), until it is closed', async () => {
  const provider = new ImageProvider(writeImage(buildImage({ id: 'kvm-6000', descs: [{ name: 'exits', values: [1] }] }), 'settled'));
  opened.push(provider);
  expect(provider.needsRefresh).toBe(true);
  expect(provider.sources()).toEqual([]);
  await provider.refresh();
  expect(provider.needsRefresh).toBe(false);
  const sources = provider.sources();
  expect(sources.map((source) => source.file.id)).toEqual(['kvm-6000']);
  // Another refresh would have changed nothing: the same source, the same array.
  await provider.refresh();
  expect(provider.sources()).toBe(sources);
  await provider.close();
  expect(provider.needsRefresh).toBe(true);
});
