/** `kvm-stats-otel helper build|path`: the preload helper, built (see sources/preload.ts) and its path printed. */
import { Command } from 'commander';
import { HelperDirError, PRELOAD_SOCKET_ENV, buildPreloadHelper } from '../sources/preload.js';

/** Builds the helper; a folder that cannot be made says which flag picks another. */
function build(dir: string | undefined, force?: boolean): void {
  let path: string;
  try {
    path = buildPreloadHelper(dir, force);
  } catch (error) {
    if (error instanceof HelperDirError) error.message += ' with --dir';
    throw error;
  }
  process.stdout.write(`${path}\n`);
}

export function helperCommand(): Command {
  const dirOption = (command: Command): Command =>
    command.option('--dir <dir>', 'the folder to build into (default: $XDG_CACHE_HOME/kvm-stats-otel or ~/.cache/kvm-stats-otel)');
  const helper = new Command('helper').description(
    `the preload helper: LD_PRELOAD it into a VMM (QEMU before 8.1) so it keeps a stats fd per VM and vCPU; with ${PRELOAD_SOCKET_ENV}=PATH it also hands them to agent --listen PATH`,
  );
  helper.addCommand(
    dirOption(new Command('build').description('compile the helper with the system C compiler and print its path'))
      .option('--force', 'compile again even if it is already built')
      .action((options: { dir?: string; force?: boolean }) => build(options.dir, options.force)),
  );
  helper.addCommand(
    dirOption(new Command('path').description('print the helper\'s path, building it first if needed')).action((options: { dir?: string }) => build(options.dir)),
  );
  return helper;
}
