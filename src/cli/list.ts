/** `kvm-stats-otel list`: what a scan of /proc finds, per VMM process, and why anything is not read. */
import { Command } from 'commander';
import { type ScannedProcess, ScanProvider } from '../sources/scan.js';

export function listCommand(): Command {
  return new Command('list')
    .description('find every process that holds KVM VMs or stats fds, and say how each stats fd is read (same uid or CAP_SYS_PTRACE)')
    .option('--json', 'print one JSON document')
    .action(async (options: { json?: boolean }) => {
      const scan = new ScanProvider();
      try {
        await scan.refresh();
        const processes = scan.scanned();
        process.stdout.write(options.json ? `${JSON.stringify({ processes })}\n` : renderList(processes));
      } finally {
        await scan.close();
      }
    });
}

/** The readable form: one block per process, one line per stats fd, then its problems. */
export function renderList(processes: readonly ScannedProcess[]): string {
  if (processes.length === 0) return 'no process that this user can look into holds KVM VMs or stats fds\n';
  const lines: string[] = [];
  for (const vmm of processes) {
    const head = [`pid ${vmm.pid}`, vmm.executable ?? 'unknown program', vmm.vmName !== null ? `vm ${vmm.vmName}` : '', `${vmm.vmFds} VM fd(s)`];
    lines.push(head.filter(Boolean).join('  '));
    // Fds with the id of one that is read are counted, not listed: a process may hold thousands.
    const same = vmm.statsFds.filter((fd) => fd.sameAs !== null);
    for (const fd of vmm.statsFds) {
      if (fd.sameAs !== null) continue;
      const what = fd.target === 'vm' ? 'VM' : `vCPU ${fd.vcpu}`;
      const how = fd.origin ?? `not read: ${fd.skipped}`;
      lines.push(`  fd ${String(fd.fd).padEnd(5)} ${what.padEnd(9)} ${(fd.id ?? '').padEnd(20)} ${how}`);
    }
    if (same.length > 0) lines.push(`  ${same.length} more stats fd(s) not read: each has the id of one above (one series per id; --json lists them)`);
    for (const problem of vmm.problems) lines.push(`  ! ${problem}`);
  }
  return `${lines.join('\n')}\n`;
}
