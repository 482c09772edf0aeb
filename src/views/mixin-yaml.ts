/**
 * YAML for the mixin's rule files, written by hand for the few shapes they have (maps, lists,
 * strings, numbers): block style that reads and diffs, strings plain or quoted as little as
 * they need, a multi-line string as a literal block. No dependency for that.
 */
export type Yaml = string | number | boolean | readonly Yaml[] | { readonly [key: string]: Yaml | undefined };

function scalar(value: string | number | boolean): string {
  if (typeof value !== 'string') return String(value);
  // Plain where nothing in it means anything to YAML, single-quoted where only its quotes need
  // doubling (PromQL's "..." stay readable), JSON's double quotes (YAML's too) otherwise.
  if (/^[A-Za-z_][A-Za-z0-9_.\/-]*$/.test(value) && !/^(true|false|yes|no|on|off|null|~)$/i.test(value)) return value;
  if (!/[\x00-\x1f\x7f]/.test(value)) return `'${value.replace(/'/g, "''")}'`;
  return JSON.stringify(value);
}

function lines(value: Yaml, indent: string): string[] {
  if (Array.isArray(value)) {
    if (value.length === 0) return [`${indent}[]`];
    return value.flatMap((item: Yaml) => {
      const [first = '', ...rest] = lines(item, `${indent}  `);
      return [`${indent}- ${first.slice(indent.length + 2)}`, ...rest];
    });
  }
  if (typeof value === 'object') {
    const entries = Object.entries(value).filter((entry): entry is [string, Yaml] => entry[1] !== undefined);
    if (entries.length === 0) return [`${indent}{}`];
    return entries.flatMap(([key, item]) => {
      if (typeof item === 'string' && item.includes('\n')) {
        return [`${indent}${key}: |-`, ...item.split('\n').map((line) => (line === '' ? '' : `${indent}  ${line}`))];
      }
      if (typeof item === 'object' && (Array.isArray(item) ? item.length > 0 : Object.keys(item).length > 0)) {
        return [`${indent}${key}:`, ...lines(item, Array.isArray(item) ? indent : `${indent}  `)];
      }
      return [`${indent}${key}: ${typeof item === 'object' ? lines(item, '')[0] : scalar(item as string | number | boolean)}`];
    });
  }
  return [`${indent}${scalar(value)}`];
}

/** A YAML document of `value`, ending in a newline; `comment` lines first, each after "# ". */
export function toYaml(value: Yaml, comment: readonly string[] = []): string {
  return `${[...comment.map((line) => `# ${line}`.trimEnd()), ...lines(value, '')].join('\n')}\n`;
}
