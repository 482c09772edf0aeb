/**
 * The golden files' helpers: where they are, how a result is compared with one (and rewritten
 * with UPDATE_GOLDEN=1), and the reviewable forms (OTLP JSON with one data point per line).
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';

export const EXPECTED = join(import.meta.dirname, 'expected');
export const UPDATE = process.env.UPDATE_GOLDEN === '1';
export const HOW_TO_UPDATE =
  'if the change is meant (a new recording, a changed mapping or encoding), regenerate the golden files with `UPDATE_GOLDEN=1 npx vitest run test/golden` and review their diff';

/** Compares `actual` with test/golden/expected/NAME, or writes it there with UPDATE_GOLDEN=1. */
export function expectGolden(name: string, actual: string): void {
  const path = join(EXPECTED, name);
  if (UPDATE) {
    mkdirSync(EXPECTED, { recursive: true });
    writeFileSync(path, actual);
    return;
  }
  if (!existsSync(path)) expect.fail(`test/golden/expected/${name} is missing: ${HOW_TO_UPDATE}`);
  const expected = readFileSync(path, 'utf8');
  if (actual === expected) return;
  // Say where first: a diff of 100 KB is no help on its own.
  const a = actual.split('\n');
  const e = expected.split('\n');
  let line = 0;
  while (line < a.length && line < e.length && a[line] === e[line]) line++;
  expect.fail(
    `output differs from test/golden/expected/${name} at line ${line + 1}:\n  expected: ${(e[line] ?? '(end)').slice(0, 400)}\n  actual:   ${(a[line] ?? '(end)').slice(0, 400)}\n${HOW_TO_UPDATE}`,
  );
}

/** The golden JSON file NAME as an object (after UPDATE_GOLDEN=1 has written it, in that mode). */
export function readGolden(name: string): unknown {
  return JSON.parse(readFileSync(join(EXPECTED, name), 'utf8'));
}

export function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** JSON with one member per line, except that every data point (and every value in a list of
 * numbers) stays on one line: a reviewable diff per series. */
export function prettyJson(value: unknown, indent = '', key = ''): string {
  const inner = `${indent} `;
  if (Array.isArray(value)) {
    if (value.length === 0) return '[]';
    if (key === 'dataPoints') return `[\n${value.map((point) => `${inner}${JSON.stringify(point)}`).join(',\n')}\n${indent}]`;
    if (value.every((item) => typeof item !== 'object' || item === null)) return JSON.stringify(value);
    return `[\n${value.map((item) => `${inner}${prettyJson(item, inner)}`).join(',\n')}\n${indent}]`;
  }
  if (typeof value === 'object' && value !== null) {
    const entries = Object.entries(value);
    if (entries.length === 0) return '{}';
    return `{\n${entries.map(([k, v]) => `${inner}${JSON.stringify(k)}: ${prettyJson(v, inner, k)}`).join(',\n')}\n${indent}}`;
  }
  return JSON.stringify(value);
}
