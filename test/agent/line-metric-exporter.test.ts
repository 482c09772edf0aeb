/**
 * --console's lines (src/agent/line-metric-exporter.ts): one per data point, and what came from
 * outside in them (a VMM's -name, a sender's attributes) shown escaped: a line cannot write into
 * the terminal it is printed on.
 */
import { describe, expect, it } from 'vitest';
import { exportLines } from '../../src/agent/line-metric-exporter.js';
import { counterMetrics, pointAt } from '../helpers/resource-metrics.js';

describe('the console lines', () => {
  it('show attribute keys and values from outside escaped', () => {
    const metrics = counterMetrics('kvm.vcpu.exits', [pointAt({ 'kvm.vm.name': 'web\x1b]0;owned\x07', 'site\x1b[2J': 'a\u202eb' }, 7)], { unit: '{exit}' });
    const [, line] = exportLines(metrics, new Date(0));
    expect(line).toBe('kvm.vcpu.exits{kvm.vm.name=web\\x1b]0;owned\\x07,site\\x1b[2J=a\\u202eb} sum {exit} 7');
  });
});
