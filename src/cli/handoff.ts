/** `kvm-stats-otel handoff`: the privileged one-shot that gives a VMM's stats fds to an unprivileged receiver. */
import { Command } from 'commander';
import { encodeHandoverHeader, handOffProcessStats } from '../setup/handover-sender.js';
import type { SourceAttributes } from '../sources/source.js';
import { UsageError } from './usage-error.js';
import { attributeOption, collect, integerOption, pidOption } from './flags.js';
import { reportToStderr } from './hints.js';
import { terminalLines } from '../views/terminal.js';

interface HandoffOptions {
  pid: number;
  to: string;
  name?: string;
  attribute?: [string, string][];
  timeout: number;
}

export function handoffCommand(): Command {
  return new Command('handoff')
    .description('copy the stats fds of process PID (same uid or CAP_SYS_PTRACE) and hand them to a receiver listening on a Unix socket (agent --listen PATH)')
    .requiredOption('--pid <pid>', 'the VMM whose stats fds to hand over', pidOption)
    .requiredOption('--to <path>', 'the receiver\'s socket')
    .option('--name <name>', 'kvm.vm.name for the receiver (default: from the VMM\'s command line)')
    .option('--attribute <key=value>', 'an extra attribute for its data points (repeatable)', collect(attributeOption))
    .option('--timeout <ms>', 'how long to wait while the receiver is busy', integerOption(0, 600_000), 10_000)
    .action(async (options: HandoffOptions) => {
      const attributes: SourceAttributes | undefined = options.attribute ? Object.fromEntries(options.attribute) : undefined;
      try {
        // A name or attribute the receiver would refuse is the caller's mistake: say so before copying anything.
        encodeHandoverHeader({ vmName: options.name, attributes });
      } catch (error) {
        throw new UsageError((error as Error).message);
      }
      const result = await handOffProcessStats(options.pid, options.to, { vmName: options.name, attributes, timeoutMs: options.timeout, sender: 'kvm-stats-otel handoff' });
      result.problems.forEach(reportToStderr);
      const vm = result.vmName !== undefined ? `vm ${result.vmName}: ` : '';
      process.stdout.write(terminalLines(`handed over ${result.sent.length} stats fds of process ${options.pid} (${vm}${result.sent.join(', ')}) to ${options.to}\n`));
    });
}
