/**
 * The mixin's runbook: one entry per alert (what it means, what to check, what to do), with the
 * expression as generated and the meaning of every stat it reads, for the kernel and unit mode
 * the mixin was made for. Each alert's runbook_url points at its entry.
 */
import type { MixinCatalog } from './mixin.js';
import { type AlertingRules, runbookAnchor } from './mixin-alerts.js';

export function runbookMarkdown(catalog: MixinCatalog, alerts: AlertingRules, header: readonly string[]): string {
  const rules = alerts.groups.flatMap((group) => group.rules);
  const lines = [
    '# KVM stats: runbook',
    '',
    ...header,
    '',
    'One entry per alert of alerts.yaml. Each says what the alert means, what to check and what to do;',
    'its expression is the one generated, and the stats it reads are named as they reach Prometheus.',
    '',
    ...rules.map((rule) => `- [${rule.alert}](#${runbookAnchor(rule.alert)}) (${rule.labels.severity}): ${rule.annotations.summary}`),
  ];
  for (const rule of rules) {
    const book = alerts.runbooks.get(rule.alert)!;
    lines.push(
      '',
      `## ${rule.alert}`,
      '',
      `Severity ${rule.labels.severity}, after ${rule.for}. ${rule.annotations.summary}`,
      '',
      '```promql',
      rule.expr,
      '```',
      '',
      `**What it means.** ${book.means}`,
      '',
      '**What it reads.**',
      '',
      ...book.metrics.map((key) => {
        const metric = catalog.get(key);
        return `- \`${metric.family.name}\` (\`${metric.otel}\`, unit \`${metric.unit}\`): ${metric.meaning}`;
      }),
      '',
      '**What to check.**',
      '',
      ...book.check.map((item) => `- ${item}`),
      '',
      '**What to do.**',
      '',
      ...book.act.map((item) => `- ${item}`),
    );
  }
  return `${lines.join('\n')}\n`;
}
