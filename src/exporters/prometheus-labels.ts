/**
 * Attribute keys as Prometheus label names, as OpenTelemetry's Prometheus compatibility
 * specification says (compatibility/prometheus_and_openmetrics.md, "Metric Attributes"): a label
 * name matches [a-zA-Z_][a-zA-Z0-9_]*, so every other character becomes `_` and runs of `_` one
 * `_`; a name that would start with a digit gets a `_` in front (as metric names do), so
 * `0digit` is `_0digit` and every character of the key is kept. Keys that come out the same are
 * one label whose value is their values joined by `;`, in the lexicographic order of the keys.
 * (exporter-prometheus writes such keys as they are, which Prometheus refuses.)
 */
import type { AttributeValue, Attributes } from '@opentelemetry/api';

/** The label name of an attribute key. */
export function prometheusLabelName(key: string): string {
  const name = key.replace(/[^A-Za-z0-9_]/g, '_').replace(/_{2,}/g, '_');
  if (name === '') return '_';
  const first = name.charCodeAt(0);
  return first >= 0x30 && first <= 0x39 ? `_${name}` : name;
}

/** A label value's text before escaping: strings as they are, anything else as JSON, undefined as empty. */
function valueText(value: AttributeValue | undefined): string {
  return typeof value === 'string' ? value : (JSON.stringify(value) ?? '');
}

/** The labels of an attributes object, in its key order: [name, value] pairs, keys that share a
 * name merged into one pair at the first one's place. */
export function prometheusLabels(attributes: Attributes): [string, AttributeValue | undefined][] {
  const labels: [string, AttributeValue | undefined][] = [];
  let byName: Map<string, string[]> | undefined;
  for (const [key, value] of Object.entries(attributes)) {
    const name = prometheusLabelName(key);
    if (labels.some(([other]) => other === name)) {
      byName ??= new Map();
      byName.set(name, [...(byName.get(name) ?? []), key]);
    } else {
      labels.push([name, value]);
    }
  }
  if (byName === undefined) return labels;
  // Collisions are rare: the keys of each merged name are found again and sorted.
  return labels.map(([name, value]) => {
    if (!byName.has(name)) return [name, value];
    const keys = Object.keys(attributes).filter((key) => prometheusLabelName(key) === name).sort();
    return [name, keys.map((key) => valueText(attributes[key])).join(';')];
  });
}
