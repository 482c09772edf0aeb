/**
 * `top` as users run it: plain lines when stdout is not a terminal, and on a terminal (a pty
 * from util-linux `script`) a screen redrawn in place that quits on q or Ctrl-C.
 */
import { spawn, spawnSync } from 'node:child_process';
import { expect, it } from 'vitest';
import { BIN } from '../examples/local-collector/collector.js';
import { describeKvm } from './helpers/kvm.js';
import { ROOT } from './helpers/processes.js';

const ESC = '\x1b[';

/** Runs `top ARGS` on a pty and types `key` once `refreshes` screens have been drawn. */
function onTerminal(args: string, key: string, refreshes = 2): Promise<{ code: number | null; output: string }> {
  const child = spawn('script', ['-qfec', `stty cols 100 rows 30; ${process.execPath} ${BIN} top ${args}`, '/dev/null'], { cwd: ROOT, stdio: ['pipe', 'pipe', 'inherit'] });
  let output = '';
  let typed = false;
  child.stdout.on('data', (chunk: Buffer) => {
    output += chunk.toString();
    if (!typed && (output.match(/kvm-stats-otel top:/g) ?? []).length >= refreshes) {
      typed = true;
      child.stdin.write(key);
    }
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  return new Promise((resolve) =>
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    }),
  );
}

describeKvm('top (real KVM)', () => {
  it('prints plain, stamped lines per VM and vCPU when stdout is not a terminal', () => {
    const result = spawnSync(process.execPath, [BIN, 'top', '--demo', '2', '--interval', '0.3', '--iterations', '2', '--rows', '3'], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
    expect(result.status, result.stderr).toBe(0);
    expect(result.stdout).not.toContain('\x1b');
    const lines = result.stdout.trim().split('\n');
    // Two refreshes, two vCPUs, three rows each: the guest's loop moves more than three counters.
    expect(lines).toHaveLength(2 * 2 * 3);
    for (const line of lines) expect(line).toMatch(/^\d{4}-\d\d-\d\dT[\d:.]+Z {2}vCPU [01] of demo \(pid \d+\) {2}[a-z0-9_]+ {2}\d+\.\d \S*\/s$/);
    // Fastest first, and exits is among the fastest (the guest exits on every port write).
    const first = lines.filter((l) => l.includes('vCPU 0 ')).slice(0, 3);
    const rates = first.map((l) => Number(/ (\d+\.\d) \S*\/s$/.exec(l)![1]));
    expect(rates).toEqual([...rates].sort((a, b) => b - a));
    expect(first.some((l) => / {2}exits {2}/.test(l))).toBe(true);
  });

  for (const [key, name] of [['q', 'q'], ['\x03', 'Ctrl-C']] as const) {
    it(`on a terminal: redraws in place, and quits on ${name} restoring the screen`, async () => {
      const { code, output } = await onTerminal('--demo 1 --interval 0.3', key);
      expect(code).toBe(0);
      expect(output.startsWith(`${ESC}?1049h${ESC}?25l`)).toBe(true); // alternate screen, cursor hidden
      expect(output.endsWith(`${ESC}?25h${ESC}?1049l`)).toBe(true); // both restored
      const screens = output.split(`${ESC}H`).slice(1);
      expect(screens.length).toBeGreaterThanOrEqual(2);
      expect(screens[0]).toMatch(/vCPU 0 of demo \(pid \d+\)\x1b\[K\r\n {2}[a-z0-9_]+ +\d+\.\d \S*\/s\x1b\[K/);
    });
  }
});
