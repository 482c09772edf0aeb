/**
 * OpenTelemetry's Prometheus compatibility rules for units: an OTel unit (UCUM, as the SDK and
 * the producer use) becomes the Prometheus unit word that a metric name ends with ("s" ->
 * "seconds", "By/s" -> "bytes_per_second"); annotations in braces ("{packet}") are no unit.
 *
 * One deviation from the specification: its "1" -> "ratio" special case is left out, because
 * "1" is what OpenTelemetry (and this project's mapping) uses for any dimensionless value,
 * counts of pages or booleans included, for which a `_ratio` name would say the wrong thing.
 */

/** UCUM units with a Prometheus name, as the OpenTelemetry Collector's translator maps them. */
const UNIT_WORDS: Readonly<Record<string, string>> = {
  d: 'days',
  h: 'hours',
  min: 'minutes',
  s: 'seconds',
  ms: 'milliseconds',
  us: 'microseconds',
  ns: 'nanoseconds',
  By: 'bytes',
  KiBy: 'kibibytes',
  MiBy: 'mebibytes',
  GiBy: 'gibibytes',
  TiBy: 'tibibytes',
  KBy: 'kilobytes',
  kBy: 'kilobytes',
  MBy: 'megabytes',
  GBy: 'gigabytes',
  TBy: 'terabytes',
  m: 'meters',
  V: 'volts',
  A: 'amperes',
  J: 'joules',
  W: 'watts',
  g: 'grams',
  Cel: 'celsius',
  Hz: 'hertz',
  '%': 'percent',
};

/** The denominators of "x/y" units, singular ("bytes_per_second"). */
const PER_WORDS: Readonly<Record<string, string>> = {
  s: 'second',
  m: 'minute',
  h: 'hour',
  d: 'day',
  w: 'week',
  mo: 'month',
  y: 'year',
};

/** A unit the tables do not know, as name characters (what Prometheus names allow). */
function asNamePart(unit: string): string {
  return unit.replace(/[^a-zA-Z0-9]+/g, '_').replace(/^_+|_+$/g, '');
}

function word(unit: string, table: Readonly<Record<string, string>>): string {
  const bare = unit.replace(/\{[^}]*\}/g, '').trim();
  if (bare === '' || bare === '1') return '';
  return table[bare] ?? asNamePart(bare);
}

/** The Prometheus unit of an OpenTelemetry unit; '' when it has none. */
export function prometheusUnit(unit: string | undefined): string {
  if (!unit) return '';
  const slash = unit.indexOf('/');
  const main = word(slash < 0 ? unit : unit.slice(0, slash), UNIT_WORDS);
  const per = slash < 0 ? '' : word(unit.slice(slash + 1), PER_WORDS);
  if (per === '') return main;
  return main === '' ? `per_${per}` : `${main}_per_${per}`;
}

/**
 * `name` (already a Prometheus name) with the unit suffix, placed before the counter's `_total`
 * (`total`: true for a monotonic sum), unless the name already ends with it.
 */
export function withUnitSuffix(name: string, unit: string, total: boolean): string {
  if (unit === '') return name;
  const stem = total && name.endsWith('_total') ? name.slice(0, -'_total'.length) : name;
  if (stem.endsWith(`_${unit}`)) return name;
  return total && stem !== name ? `${stem}_${unit}_total` : `${stem}_${unit}`;
}
