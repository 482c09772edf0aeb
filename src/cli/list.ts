/**
 * `kvm-stats-otel list`: what a scan of /proc finds, per VMM process, and why anything is not
 * read; and the series the agent would export per collection for it, under the same selection
 * and aggregation flags.
 */
import { Command } from 'commander';
import { shippedRecordingText } from '../setup/demo-fallback.js';
import { kvmAvailability } from '../sources/kvm-check.js';
import type { VcpuAggregation } from '../otel/aggregation.js';
import { StatSelection } from '../otel/selection.js';
import { type HostSeries, type ListedSeries, seriesOf } from '../views/series.js';
import { type ScannedProcess, ScanProvider } from '../sources/scan.js';
import type { StatsSource } from '../sources/source.js';
import { addSelectionOptions } from './flags.js';
import { problemText } from './hints.js';
import { selectionText } from './schema.js';
import { terminalLines } from '../views/terminal.js';

interface ListOptions {
  json?: boolean;
  include?: string[];
  exclude?: string[];
  vcpuAggregation: VcpuAggregation;
}

/** A process as `list` prints it: its problems as lines, with the flags that help. */
export type ListedProcess = Omit<ScannedProcess, 'problems'> & { readonly problems: readonly string[] };

export function listCommand(): Command {
  const command = new Command('list')
    .description('find every process that holds KVM VMs or stats fds, say how each stats fd is read (same uid or CAP_SYS_PTRACE), and count the series they export')
    .option('--json', 'print one JSON document');
  addSelectionOptions(command);
  return command.action(async (options: ListOptions) => {
    const scan = new ScanProvider();
    try {
      await scan.refresh();
      const processes = scan.scanned().map((found): ListedProcess => ({ ...found, problems: found.problems.map(problemText) }));
      const selection = new StatSelection(options);
      const series = seriesOf(scan.sources(), { selection, vcpuAggregation: options.vcpuAggregation, units: 'exact' });
      process.stdout.write(options.json ? `${JSON.stringify({ processes, series })}\n` : terminalLines(renderList(processes, series)));
      if (!options.json && processes.length === 0) process.stdout.write(noKvmText());
    } finally {
      await scan.close();
    }
  });
}

/** Where nothing is found on a host without KVM: why, and what replays instead. */
function noKvmText(): string {
  const kvm = kvmAvailability();
  return kvm.available ? '' : `no KVM here: ${kvm.message}. npm start (agent --demo), read --demo and top --demo replay ${shippedRecordingText()} instead\n`;
}

function seriesText(series: HostSeries): string {
  return `${series.dataPoints.toLocaleString('en-US')} data points (${series.prometheusSeries.toLocaleString('en-US')} Prometheus series) per collection`;
}

/** The readable form: one block per process, one line per stats fd, then its problems; then
 * what the host exports. */
export function renderList(processes: readonly ListedProcess[], series?: ListedSeries): string {
  if (processes.length === 0) return 'no process that this user can look into holds KVM VMs or stats fds\n';
  const lines: string[] = [];
  for (const vmm of processes) {
    const head = [`pid ${vmm.pid}`, vmm.executable ?? 'unknown program', vmm.vmName !== null ? `vm ${vmm.vmName}` : '', vmm.vmUuid !== null ? `uuid ${vmm.vmUuid}` : '', `${vmm.vmFds} VM fd(s)`];
    lines.push(head.filter(Boolean).join('  '));
    // Fds with the id of one that is read are counted, not listed: a process may hold thousands.
    const same = vmm.statsFds.filter((fd) => fd.sameAs !== null);
    // So are copies of another process's stats fds (another agent): one line per process copied from.
    const copies = new Map<number, number>();
    for (const fd of vmm.statsFds) {
      if (fd.sameAs !== null) continue;
      if (fd.copyOf !== null) {
        copies.set(fd.copyOf, (copies.get(fd.copyOf) ?? 0) + 1);
        continue;
      }
      const what = fd.target === 'vm' ? 'VM' : `vCPU ${fd.vcpu}${fd.vcpuIndex !== null ? ` index ${fd.vcpuIndex}` : ''}`;
      const how = fd.origin ?? `not read: ${fd.skipped}`;
      lines.push(`  fd ${String(fd.fd).padEnd(5)} ${what.padEnd(9)} ${(fd.id ?? '').padEnd(20)} ${how}`);
    }
    for (const [creator, count] of copies) {
      lines.push(`  ${count.toLocaleString('en-US')} stats fd(s) not read: copies of stats fds of process ${creator}, which is read from there (--json lists them)`);
    }
    if (same.length > 0) lines.push(`  ${same.length} more stats fd(s) not read: each has the id of one above (one series per id; --json lists them)`);
    for (const problem of vmm.problems) lines.push(`  ! ${problem}`);
    const exported = series?.processes.find((p) => p.pid === vmm.pid);
    if (exported) lines.push(`  exports ${seriesText(exported)}`);
  }
  if (series) {
    const { host } = series;
    const vms = host.vcpuGroups !== null ? ` summed into ${host.vcpuGroups} VM(s)` : '';
    lines.push(
      '',
      `the host: ${seriesText(host)} from ${host.vmFds + host.vcpuFds} stats fds (${host.vmFds} of VMs, ${host.vcpuFds} of vCPUs${vms});`,
      `  exported: ${selectionText(series.selection)}; kvm-stats-otel schema shows which stats`,
    );
  }
  return `${lines.join('\n')}\n`;
}
