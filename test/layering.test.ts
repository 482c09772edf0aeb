/**
 * The data flows one way through src/: a folder imports only from its own rank or a lower one,
 * so that the reader of a low folder never has to know a high one. Every import of every file
 * (static, type-only, re-export and dynamic) is found by TypeScript's own pre-processor.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const SRC = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'src');

/** Low to high. Folders of the same rank are peers and must not import each other. */
const RANKS: Readonly<Record<string, number>> = {
  abi: 0,
  native: 1,
  stats: 2,
  sources: 3,
  otel: 4,
  exporters: 5,
  // What the front ends use that the library's users never need (docs/architecture.md).
  views: 6,
  setup: 6,
  agent: 7,
  bench: 7,
  cli: 8,
};
/** src/index.ts, the package's entry: the library folders only, never the agent, bench or cli. */
const ENTRY_RANK = RANKS.exporters!;

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return sourceFiles(path);
    return /\.(ts|mts|cts)$/.test(entry.name) && !entry.name.endsWith('.d.ts') ? [path] : [];
  });
}

/** The folder under src/ a path is in: '' for a file in src/ itself, undefined outside src/. */
function folderOf(path: string): string | undefined {
  const rel = relative(SRC, path);
  if (rel.startsWith('..') || rel === '') return undefined;
  const parts = rel.split(sep);
  return parts.length === 1 ? '' : parts[0];
}

/** Every "file -> import" that runs against the flow. */
function layeringViolations(): string[] {
  const violations: string[] = [];
  for (const file of sourceFiles(SRC)) {
    const name = relative(join(SRC, '..'), file);
    const from = folderOf(file)!;
    const fromRank = from === '' ? ENTRY_RANK : RANKS[from];
    const { importedFiles } = ts.preProcessFile(readFileSync(file, 'utf8'), true, true);
    for (const { fileName: specifier } of importedFiles) {
      if (!specifier.startsWith('.')) continue; // a package or node: builtin
      const target = resolve(dirname(file), specifier);
      const to = folderOf(target);
      const toRank = to === undefined || to === '' ? undefined : RANKS[to];
      const allowed =
        fromRank !== undefined &&
        toRank !== undefined &&
        (from === to || toRank < fromRank || (from === '' && toRank <= fromRank));
      if (!allowed) violations.push(`${name} -> ${specifier}`);
    }
  }
  return violations.sort();
}

describe('layering of src/', () => {
  it('finds the imports it checks', () => {
    // A parser that found nothing would pass every tree.
    const imports = sourceFiles(SRC).flatMap((file) => ts.preProcessFile(readFileSync(file, 'utf8'), true, true).importedFiles);
    expect(imports.filter((i) => i.fileName.startsWith('.')).length).toBeGreaterThan(100);
  });

  it('imports run one way: abi -> native -> stats -> sources -> otel -> exporters -> views | setup -> agent | bench -> cli', () => {
    const violations = layeringViolations();
    if (violations.length > 0) console.log(`imports against the flow:\n${violations.join('\n')}`);
    expect(violations, 'each entry is "file -> import"').toEqual([]);
  });
});
