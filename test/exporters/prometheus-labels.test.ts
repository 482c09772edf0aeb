/**
 * Attribute keys as Prometheus label names (src/exporters/prometheus-labels.ts), as OpenTelemetry's
 * Prometheus compatibility specification says; and a scrape with such keys, which promtool
 * accepts.
 */
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { prometheusLabelName, prometheusLabels } from '../../src/exporters/prometheus-labels.js';
import { PrometheusTextSerializer } from '../../src/exporters/prometheus-text.js';
import { counterMetrics, pointAt } from '../helpers/resource-metrics.js';

describe('Prometheus label names', () => {
  it('replaces every character a label name may not hold by _, one _ for a run, and puts _ before a leading digit', () => {
    const names = ['0digit', 'kvm.vm.name', 'a..b', '__reserved', 'é', '', 'ok_Name9', '9', 'a-b/c'].map(prometheusLabelName);
    expect(names).toEqual(['_0digit', 'kvm_vm_name', 'a_b', '_reserved', '_', '_', 'ok_Name9', '_9', 'a_b_c']);
    for (const name of names) expect(name).toMatch(/^[a-zA-Z_][a-zA-Z0-9_]*$/);
  });

  it('merges keys that become one name: their values joined by ; in the order of the keys, at the first one\'s place', () => {
    expect(prometheusLabels({ first: 1, 'a.b': 1, 'a_b': 'x', last: 'z', 'a-b': true })).toEqual([
      ['first', 1],
      ['a_b', 'true;1;x'],
      ['last', 'z'],
    ]);
    const plain = { 'process.pid': 1, 'kvm.vcpu.id': 0 };
    expect(prometheusLabels(plain)).toEqual([['process_pid', 1], ['kvm_vcpu_id', 0]]);
  });

  it('gives a scrape promtool accepts where a resource or a point has such keys', () => {
    const metrics = counterMetrics('c', [pointAt({ '1st': 'a', 'x.y': 'b', x_y: 'c' }, 1)], {
      description: 'A counter.',
      scope: 'scope',
      resource: { '0digit': 'r', 'service.name': 's', service_name: 't' },
    });
    const text = new PrometheusTextSerializer({ withResourceConstantLabels: /digit/ }).serialize(metrics);
    expect(text).toContain('target_info{_0digit="r",service_name="s;t"} 1\n');
    expect(text).toContain('c_total{_1st="a",x_y="b;c",otel_scope_name="scope",_0digit="r"} 1\n');
    const check = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8', timeout: 60_000 });
    expect(`${check.stdout}${check.stderr}`).toBe('');
    expect(check.status).toBe(0);
  });
});
