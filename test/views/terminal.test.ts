/**
 * Text from outside as a terminal may show it (src/views/terminal.ts), and commands that print
 * such text: `read` and `schema` of an image whose stat names hold escape sequences, and an error
 * that quotes one. (A VMM's -name in top, read and list: test/cli/top.test.ts, on KVM; the
 * console's lines: test/agent/line-metric-exporter.test.ts.)
 */
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { terminalLines, terminalText } from '../../src/views/terminal.js';
import { buildImage, writeImage } from '../helpers/image.js';
import { BIN, ROOT } from '../helpers/processes.js';

// eslint-disable-next-line no-control-regex
const ACTED_ON = /[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]/;

describe('terminalText', () => {
  it('shows controls, escape sequences and bidirectional overrides as escapes, and leaves the rest', () => {
    expect(terminalText('web\x1b]0;owned\x07-1')).toBe('web\\x1b]0;owned\\x07-1');
    expect(terminalText('a\nb\tc\rd')).toBe('a\\nb\\tc\\rd');
    expect(terminalText('\u009b2J')).toBe('\\x9b2J'); // C1 CSI
    expect(terminalText('evil\u202ecod.exe')).toBe('evil\\u202ecod.exe');
    expect(terminalText('é 日本 vm-1 (x)')).toBe('é 日本 vm-1 (x)');
    expect(terminalLines('one\x1b[2J\ntwo')).toBe('one\\x1b[2J\ntwo');
  });
});

describe('commands that print what came from outside', () => {
  const run = (args: string[]) => spawnSync(process.execPath, [BIN, ...args], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });

  it('read and schema show an image\'s names escaped, and so does an error that quotes them', () => {
    // A stat's name that clears the screen: not a metric name, so it is skipped and said so.
    const image = writeImage(buildImage({ id: 'kvm-4242/vcpu-0', descs: [{ name: 'ok', values: [1] }, { name: 'exits\x1b[2J', values: [7] }] }), 'terminal');
    for (const args of [['read', '--file', image], ['schema', '--file', image]]) {
      const result = run(args);
      expect(result.status, result.stderr).toBe(0);
      expect(result.stdout, args[0]).not.toMatch(ACTED_ON);
      expect(result.stdout, args[0]).toContain('exits\\x1b[2J');
    }
    const broken = writeImage(buildImage({ descs: [{ name: 'a\x1b]0;owned\x07', offset: 4 }] }), 'terminal');
    const failed = run(['read', '--file', broken]);
    expect(failed.stderr).toBe('kvm-stats-otel: invalid KVM stats image: descriptor[0] (a\\x1b]0;owned\\x07).offset is 4, not 8-byte aligned\n');
  });
});
