/**
 * `top` as operators run it: plain lines when stdout is not a terminal (one per VM, or an opened
 * VM's counters per vCPU), following VMs that come and go under --scan; and on a terminal (a pty
 * from util-linux `script`) a screen redrawn in place that sorts, opens a VM and goes back on
 * keys, and quits on q or Ctrl-C restoring the screen.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { expect, it } from 'vitest';
import { BIN } from '../../examples/local-collector/collector.js';
import { describeKvm } from '../helpers/kvm.js';
import { ROOT, startVmm } from '../helpers/processes.js';

const ESC = '\x1b[';
const RATE = '(?:-|\\d+\\.\\d[kMG]?)';
const BUCKET = '(?:-|<=\\S+|>\\S+)';
const STAMP = '\\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z';

/** Runs `top ARGS` on a pty; each step waits until the output (since the previous step) matches
 * its pattern, then types its key. */
function onTerminal(args: string, steps: readonly [RegExp, string][]): Promise<{ code: number | null; output: string; seen: string[] }> {
  const child = spawn('script', ['-qfec', `stty cols 160 rows 30; ${process.execPath} ${BIN} top ${args}`, '/dev/null'], { cwd: ROOT, stdio: ['pipe', 'pipe', 'inherit'] });
  let output = '';
  let from = 0;
  let step = 0;
  const seen: string[] = [];
  child.stdout.on('data', (chunk: Buffer) => {
    output += chunk.toString();
    if (step < steps.length && steps[step]![0].test(output.slice(from))) {
      seen.push(output.slice(from));
      from = output.length;
      child.stdin.write(steps[step++]![1]);
    }
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  return new Promise((resolve) =>
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, output, seen });
    }),
  );
}

function vmLine(name: string): RegExp {
  return new RegExp(
    `^${STAMP} {2}VM ${name} \\(pid \\d+\\) {2}vcpus \\d+ {2}exits/s ${RATE} {2}halts/s ${RATE} {2}delay (?:-|\\d+\\.\\d%) {2}halt p50 ${BUCKET} p99 ${BUCKET} {2}poll p50 ${BUCKET} p99 ${BUCKET}$`,
  );
}

describeKvm('top (real KVM)', () => {
  it('shows a VMM\'s -name escaped, as read and list do: a name cannot write into the terminal', async () => {
    const vmm = await startVmm(['--vcpus', '1', '-name', 'guest=web\x1b]0;owned\x07\u202e']);
    try {
      for (const args of [['top', '--pid', String(vmm.pid), '--interval', '0.3', '--iterations', '1'], ['read', '--pid', String(vmm.pid)], ['list']]) {
        const result = spawnSync(process.execPath, [BIN, ...args], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
        expect(result.status, result.stderr).toBe(0);
        // eslint-disable-next-line no-control-regex
        expect(result.stdout, args[0]).not.toMatch(/[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e]/);
        expect(result.stdout, args[0]).toContain('web\\x1b]0;owned\\x07\\u202e');
      }
    } finally {
      await vmm.stop();
    }
  });

  it('prints one plain, stamped line per VM per refresh when stdout is not a terminal', () => {
    const result = spawnSync(process.execPath, [BIN, 'top', '--demo', '2', '--interval', '0.3', '--iterations', '2'], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
    expect(result.status, result.stderr).toBe(0);
    expect(result.stdout).not.toContain('\x1b');
    const lines = result.stdout.trim().split('\n');
    expect(lines).toHaveLength(2);
    for (const line of lines) expect(line).toMatch(vmLine('demo'));
    // The guest exits on every port write and halts in a loop; its vCPUs share a thread: no delay.
    expect(lines[1]).toMatch(/ {2}vcpus 2 {2}exits\/s \d/);
    expect(lines[1]).toMatch(/ {2}halts\/s \d/);
    expect(lines[1]).toMatch(/ {2}delay - /);
  });

  it('--vm opens a VM: per counter its total and rate, and each vCPU\'s total, share and rate', () => {
    const result = spawnSync(process.execPath, [BIN, 'top', '--demo', '2', '--interval', '0.3', '--iterations', '1', '--vm', 'demo', '--rows', '3'], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
    expect(result.status, result.stderr).toBe(0);
    const lines = result.stdout.trim().split('\n');
    // Three counters, each a line for the VM and one per vCPU.
    expect(lines).toHaveLength(3 * 3);
    const line = new RegExp(`^${STAMP} {2}VM demo \\(pid \\d+\\) {2}([a-z0-9_.:]+) {2}(all|vCPU [01]) {2}total ([\\d,]+) {2}share (\\d+\\.\\d)% {2}rate ${RATE}(?: \\S+)?/s$`);
    const parsed = lines.map((l) => {
      const m = line.exec(l);
      expect(m, l).not.toBeNull();
      return { stat: m![1]!, who: m![2]!, total: Number(m![3]!.replace(/,/g, '')), share: Number(m![4]) };
    });
    for (let i = 0; i < 3; i++) {
      const [all, v0, v1] = parsed.slice(3 * i, 3 * i + 3);
      expect([all!.who, v0!.who, v1!.who]).toEqual(['all', 'vCPU 0', 'vCPU 1']);
      expect(v0!.stat).toBe(all!.stat);
      expect(v0!.total + v1!.total).toBe(all!.total);
      expect(v0!.share + v1!.share).toBeCloseTo(100, 0);
    }
    expect(parsed.map((p) => p.stat)).toContain('exits');
  });

  it('under --scan, follows VMs as they come and go', async () => {
    const tag = `top${process.pid}`;
    const first = await startVmm(['--vcpus', '1', '-name', `guest=${tag}-first`]);
    let second: Awaited<ReturnType<typeof startVmm>> | undefined;
    let child: ChildProcess | undefined;
    try {
      child = spawn(process.execPath, [BIN, 'top', '--scan', '--interval', '0.4', '--sort', 'name'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
      let output = '';
      child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
      const refreshes = () => {
        const byStamp = new Map<string, string[]>();
        for (const line of output.split('\n').filter(Boolean)) {
          const stamp = line.slice(0, line.indexOf(' '));
          byStamp.set(stamp, [...(byStamp.get(stamp) ?? []), line]);
        }
        return [...byStamp.values()];
      };
      const until = async (what: string, ok: (lines: string[]) => boolean) => {
        const deadline = Date.now() + 30_000;
        while (!refreshes().some(ok)) {
          if (Date.now() > deadline) throw new Error(`top never showed ${what}:\n${output}`);
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
        return refreshes().length;
      };
      const has = (lines: string[], name: string) => lines.some((l) => vmLine(name).test(l));
      await until('the first VM', (lines) => has(lines, `${tag}-first`));
      second = await startVmm(['--vcpus', '2', '-name', `guest=${tag}-second`]);
      await until('the second VM beside the first', (lines) => has(lines, `${tag}-first`) && has(lines, `${tag}-second`));
      await first.stop();
      const seen = await until('the second VM without the first', (lines) => has(lines, `${tag}-second`) && !has(lines, `${tag}-first`));
      // Once gone, it stays gone; the line of the second says 2 vCPUs.
      await until('another refresh', () => refreshes().length > seen + 1);
      const last = refreshes().at(-2)!;
      expect(has(last, `${tag}-first`)).toBe(false);
      expect(last.find((l) => l.includes(`VM ${tag}-second `))).toMatch(/ {2}vcpus 2 {2}/);
    } finally {
      child?.kill('SIGTERM');
      await first.stop();
      await second?.stop();
    }
  });

  it('on a terminal: a line per VM, sorts on keys, opens a VM with Enter to its vCPUs and meanings, goes back on Esc, quits on q', async () => {
    const { code, output, seen } = await onTerminal('--demo 2 --interval 0.3', [
      [/kvm-stats-otel top: 1 VM\(s\)[^]*kvm-stats-otel top: 1 VM\(s\)/, 'n'],
      [/sort name/, '\r'],
      [/kvm-stats-otel top: VM demo \(pid \d+\), 2 vCPU\(s\)[^]*exits[^]*VM exits/, '\x1b'],
      [/kvm-stats-otel top: 1 VM\(s\)/, 'q'],
    ]);
    expect(code).toBe(0);
    expect(seen).toHaveLength(4);
    expect(output.startsWith(`${ESC}?1049h${ESC}?25l`)).toBe(true); // alternate screen, cursor hidden
    expect(output.endsWith(`${ESC}?25h${ESC}?1049l`)).toBe(true); // both restored
    // The list: the header, the columns, the demo VM selected with its rates.
    expect(seen[0]).toMatch(/sort exits/);
    expect(seen[0]).toMatch(/ {2}VM +PID +vCPUs +exits\/s +halts\/s +delay +halt p50 +halt p99 +poll p50 +poll p99\x1b\[K/);
    expect(seen[0]).toMatch(/> demo +\d+ +2 +\d+\.\d[kMG]? +\d+\.\d[kMG]? +- +/);
    // Opened: per counter the VM's total, share and rate and its meaning, then each vCPU's.
    const detail = seen[2]!;
    expect(detail).toMatch(/ {2}exits +all +[\d,]+ +100\.0% +\S+\/s {2}VM exits: times the guest stopped running and KVM took over\.\x1b\[K/);
    expect(detail).toMatch(/\x1b\[K\r\n {35}0 +[\d,]+ +\d+\.\d% +\S+\/s\x1b\[K\r\n {35}1 +[\d,]+ +\d+\.\d% +\S+\/s/);
  });

  it('quits on Ctrl-C too, restoring the screen', async () => {
    const { code, output } = await onTerminal('--demo 1 --interval 0.3', [[/kvm-stats-otel top:[^]*kvm-stats-otel top:/, '\x03']]);
    expect(code).toBe(0);
    expect(output.endsWith(`${ESC}?25h${ESC}?1049l`)).toBe(true);
  });
});
