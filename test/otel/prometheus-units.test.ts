/**
 * OpenTelemetry's Prometheus compatibility rules for units (src/otel/prometheus-units.ts): the
 * unit word an OpenTelemetry unit becomes, and where it goes in a name.
 */
import { describe, expect, it } from 'vitest';
import { prometheusUnit, withUnitSuffix } from '../../src/otel/prometheus-units.js';

describe('Prometheus unit words', () => {
  it('maps OpenTelemetry units to Prometheus unit words', () => {
    expect(['s', 'ms', 'us', 'ns', 'By', 'KiBy', 'kBy', '1', '{packet}', '{cycle}', 'By/s', '{packet}/s', '', 'Cel', 'weird unit'].map(prometheusUnit)).toEqual([
      'seconds',
      'milliseconds',
      'microseconds',
      'nanoseconds',
      'bytes',
      'kibibytes',
      'kilobytes',
      '',
      '',
      '',
      'bytes_per_second',
      'per_second',
      '',
      'celsius',
      'weird_unit',
    ]);
  });

  it('puts the unit before _total, once', () => {
    expect(withUnitSuffix('kvm_vcpu_halt_wait', 'seconds', true)).toBe('kvm_vcpu_halt_wait_seconds');
    expect(withUnitSuffix('kvm_vcpu_halt_wait_total', 'seconds', true)).toBe('kvm_vcpu_halt_wait_seconds_total');
    expect(withUnitSuffix('kvm_vcpu_halt_wait_seconds_total', 'seconds', true)).toBe('kvm_vcpu_halt_wait_seconds_total');
    expect(withUnitSuffix('kvm_vcpu_halt_wait_seconds', 'seconds', false)).toBe('kvm_vcpu_halt_wait_seconds');
    expect(withUnitSuffix('seconds_left', 'seconds', false)).toBe('seconds_left_seconds');
    expect(withUnitSuffix('x', '', true)).toBe('x');
  });
});
