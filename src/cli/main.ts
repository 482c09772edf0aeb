#!/usr/bin/env node
/**
 * The command line. Exit codes: 0 ok, 1 runtime error, 2 usage error. Errors are one line on
 * stderr; --verbose adds the stack.
 */
// First: before the other modules load (agent-heap.ts says why).
import './agent-heap.js';
import { Command, CommanderError } from 'commander';
import { SCOPE_VERSION } from '../otel/version.js';
import { agentCommand } from './agent.js';
import { benchCommand } from './bench.js';
import { UsageError } from './usage-error.js';
import { handoffCommand } from './handoff.js';
import { helperCommand } from './helper.js';
import { errorText } from './hints.js';
import { listCommand } from './list.js';
import { mixinCommand } from './mixin.js';
import { readCommand } from './read.js';
import { recordCommand } from './record.js';
import { schemaCommand } from './schema.js';
import { topCommand } from './top.js';
import { terminalText } from '../views/terminal.js';

export const EXIT_OK = 0;
export const EXIT_RUNTIME = 1;
export const EXIT_USAGE = 2;

function program(): Command {
  const root = new Command('kvm-stats-otel')
    .description('KVM binary statistics (KVM_GET_STATS_FD) as OpenTelemetry metrics')
    .version(SCOPE_VERSION)
    .option('--verbose', 'print stack traces with errors')
    .configureOutput({ outputError: (text, write) => write(`kvm-stats-otel: ${text.replace(/^error: /, '')}`) })
    .exitOverride();
  for (const command of [readCommand(), recordCommand(), listCommand(), helperCommand(), handoffCommand(), agentCommand(), schemaCommand(), mixinCommand(), topCommand(), benchCommand()]) root.addCommand(inherit(command, root));
  return root;
}

/** The root's settings (error output, exit codes) for a command and its own subcommands. */
function inherit(command: Command, parent: Command): Command {
  command.copyInheritedSettings(parent);
  for (const sub of command.commands) inherit(sub, command);
  return command;
}

export async function main(argv: readonly string[]): Promise<number> {
  const root = program();
  try {
    await root.parseAsync(argv, { from: 'user' });
    return EXIT_OK;
  } catch (error) {
    if (error instanceof CommanderError) {
      // Help and version end with "errors" whose exit code is 0; commander has printed them.
      return error.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
    }
    const verbose = argv.includes('--verbose');
    const message = verbose ? ((error as Error).stack ?? String(error)) : errorText(error as Error);
    // A message may quote what came from outside (an image's names): shown, never acted on.
    process.stderr.write(`kvm-stats-otel: ${verbose ? message : terminalText(message)}\n`);
    return error instanceof UsageError || error instanceof RangeError ? EXIT_USAGE : EXIT_RUNTIME;
  }
}

// A reader that goes away (`agent --console | head`) ends the command quietly, as SIGPIPE ends
// other tools; Node ignores SIGPIPE and would otherwise throw EPIPE from the next write.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code !== 'EPIPE') throw error;
  process.exit(EXIT_OK);
});

process.exitCode = await main(process.argv.slice(2));
