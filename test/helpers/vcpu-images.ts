/**
 * Stats images in files whose values a test rewrites between collections (ImageStats): vCPU
 * (and VM) images with one stat of every kind the aggregation treats differently, one with a
 * stat of every kind the producer maps apart (KindsImage), and ways to look at a result.
 */
import { writeFileSync } from 'node:fs';
import type { Attributes } from '@opentelemetry/api';
import type { Histogram, MetricData, ResourceMetrics } from '@opentelemetry/sdk-metrics';
import {
  KVM_STATS_BASE_POW2,
  KVM_STATS_TYPE_INSTANT,
  KVM_STATS_TYPE_LINEAR_HIST,
  KVM_STATS_TYPE_LOG_HIST,
  KVM_STATS_TYPE_PEAK,
  KVM_STATS_UNIT_BOOLEAN,
  KVM_STATS_UNIT_BYTES,
  KVM_STATS_UNIT_SECONDS,
} from '../../src/abi/kvm.js';
import { type StatsOwner, type StatsSource, statsSource } from '../../src/sources/source.js';
import { StatsFile } from '../../src/stats/stats-file.js';
import { type DescSpec, buildImage, writeImage } from './image.js';

export interface VcpuValues {
  /** cumulative */
  exits: number;
  /** instant, boolean */
  blocking: number;
  /** instant, KiB */
  load: number;
  /** peak */
  peak: number;
  /** cumulative ns: halt_wait_hist's sum */
  waitNs: number;
  /** log2 histogram, 4 buckets */
  wait: number[];
}

export const VCPU: VcpuValues = { exits: 100, blocking: 0, load: 4, peak: 9, waitNs: 50, wait: [1, 2, 0, 3] };

function vcpuDescs(v: VcpuValues): DescSpec[] {
  return [
    { name: 'exits', values: [v.exits] },
    { name: 'blocking', type: KVM_STATS_TYPE_INSTANT, unit: KVM_STATS_UNIT_BOOLEAN, values: [v.blocking] },
    { name: 'load', type: KVM_STATS_TYPE_INSTANT, unit: KVM_STATS_UNIT_BYTES, base: KVM_STATS_BASE_POW2, exponent: 10, values: [v.load] },
    { name: 'max_peak', type: KVM_STATS_TYPE_PEAK, values: [v.peak] },
    { name: 'halt_wait_ns', unit: KVM_STATS_UNIT_SECONDS, exponent: -9, values: [v.waitNs] },
    { name: 'halt_wait_hist', type: KVM_STATS_TYPE_LOG_HIST, unit: KVM_STATS_UNIT_SECONDS, exponent: -9, size: 4, values: v.wait },
  ];
}

/** A stats image in a file, its stats laid out by `descs` from values that set() rewrites in place. */
export class ImageStats<V = VcpuValues> {
  readonly path: string;
  readonly source: StatsSource;
  readonly #id: string;
  readonly #descs: (values: V) => DescSpec[];

  /** Without `descs`, a vCPU image of VcpuValues. */
  constructor(id: string, values: V & VcpuValues, owner: StatsOwner);
  constructor(id: string, values: V, owner: StatsOwner, descs: (values: V) => DescSpec[]);
  constructor(id: string, values: V, owner: StatsOwner, descs?: (values: V) => DescSpec[]) {
    this.#id = id;
    this.#descs = descs ?? (vcpuDescs as (values: unknown) => DescSpec[]);
    this.path = writeImage(buildImage({ id, descs: this.#descs(values) }), 'vcpu-images');
    this.source = statsSource(StatsFile.openImage(this.path), owner, this.path);
  }

  set(values: V): void {
    writeFileSync(this.path, buildImage({ id: this.#id, descs: this.#descs(values) }));
  }
}

/** vCPU `vcpu` of a VM named `vmName` in process `pid`. */
export function imageVcpu(vmName: string, vcpu: number, values: VcpuValues = VCPU, pid = 77): ImageStats {
  return new ImageStats(`kvm-${pid}/vcpu-${vcpu}`, values, { pid, vmName, startTimeMs: 1_700_000_000_000 });
}

/** The VM-level image of a VM: one counter, `exits` as its value. */
export function imageVm(vmName: string, pid = 77): ImageStats {
  return new ImageStats(`kvm-${pid}`, VCPU, { pid, vmName, startTimeMs: 1_700_000_000_000 }, (v) => [{ name: 'remote_tlb_flush', values: [v.exits] }]);
}

export function metricOf(rm: ResourceMetrics, name: string): MetricData | undefined {
  return rm.scopeMetrics.flatMap((s) => s.metrics).find((m) => m.descriptor.name === name);
}

export type PointLike = { attributes: Attributes; value: number | Histogram; startTime: [number, number]; endTime: [number, number] };

export function pointsOf(rm: ResourceMetrics, name: string): PointLike[] {
  return (metricOf(rm, name)?.dataPoints ?? []) as PointLike[];
}

/** The point of `name` whose attributes include `attributes`. */
export function pointOf(rm: ResourceMetrics, name: string, attributes: Attributes): PointLike {
  const found = pointsOf(rm, name).filter((p) => Object.entries(attributes).every(([k, v]) => p.attributes[k] === v));
  if (found.length !== 1) throw new Error(`${found.length} points of ${name} with ${JSON.stringify(attributes)}`);
  return found[0]!;
}

/** What a result says, times left out: every metric, and each point's attributes and value,
 * sorted by name. */
export function content(rm: ResourceMetrics) {
  return rm.scopeMetrics
    .flatMap((s) => s.metrics)
    .map((m) => ({
      descriptor: m.descriptor,
      type: m.dataPointType,
      temporality: m.aggregationTemporality,
      points: (m.dataPoints as PointLike[]).map((p) => ({ attributes: p.attributes, value: structuredClone(p.value) })),
    }))
    .sort((a, b) => a.descriptor.name.localeCompare(b.descriptor.name));
}

/** Values of a vCPU image with one stat of each kind the producer maps apart (KindsImage). */
export interface KindValues {
  exits: number;
  pages: number;
  peak: number;
  mode: number;
  waitNs: number;
  wait: number[];
  linear: number[];
}

function kindDescs(v: KindValues): DescSpec[] {
  return [
    { name: 'exits', values: [v.exits] },
    { name: 'pages', type: KVM_STATS_TYPE_INSTANT, unit: KVM_STATS_UNIT_BYTES, base: KVM_STATS_BASE_POW2, exponent: 10, values: [v.pages] },
    { name: 'max_run', type: KVM_STATS_TYPE_PEAK, values: [v.peak] },
    { name: 'guest_mode', type: KVM_STATS_TYPE_INSTANT, unit: KVM_STATS_UNIT_BOOLEAN, values: [v.mode] },
    { name: 'halt_wait_ns', unit: KVM_STATS_UNIT_SECONDS, exponent: -9, values: [v.waitNs] },
    { name: 'halt_wait_hist', type: KVM_STATS_TYPE_LOG_HIST, unit: KVM_STATS_UNIT_SECONDS, exponent: -9, size: 4, values: v.wait },
    { name: 'lin_hist', type: KVM_STATS_TYPE_LINEAR_HIST, size: 3, bucketSize: 10, values: v.linear },
  ];
}

export const KINDS: KindValues = { exits: 100, pages: 4, peak: 9, mode: 1, waitNs: 50, wait: [1, 2, 0, 3], linear: [5, 0, 1] };

/** A vCPU image with one stat of each kind the producer treats apart, rewritten in place by set(). */
export class KindsImage extends ImageStats<KindValues> {
  constructor(id: string, values: KindValues, owner = { pid: 4321, vmName: 'guest1', startTimeMs: 1_700_000_000_000 }) {
    super(id, values, owner, kindDescs);
  }
}

/** The metric of that name; throws without one. */
export function metricNamed(resourceMetrics: ResourceMetrics, name: string): MetricData {
  const found = resourceMetrics.scopeMetrics.flatMap((s) => s.metrics).find((m) => m.descriptor.name === name);
  if (!found) throw new Error(`no metric ${name}`);
  return found;
}

/** The point of vCPU `vcpu` in metric `name`; throws without one. */
export function vcpuPoint(resourceMetrics: ResourceMetrics, name: string, vcpu = 0) {
  const m = metricNamed(resourceMetrics, name);
  const found = (m.dataPoints as { attributes: Attributes; value: unknown; startTime: [number, number]; endTime: [number, number] }[]).find(
    (p) => p.attributes['kvm.vcpu.id'] === vcpu,
  );
  if (!found) throw new Error(`no point for vCPU ${vcpu} in ${name}`);
  return found;
}
