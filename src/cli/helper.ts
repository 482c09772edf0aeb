/** `kvm-stats-otel helper build|path|wrapper`: the preload helper, built (see setup/preload.ts) and its path printed,
 * or an `<emulator>` wrapper for libvirt that runs QEMU with it. */
import { isAbsolute, join, resolve } from 'node:path';
import { Command } from 'commander';
import { HelperDirError, PRELOAD_LINK_NAME, PRELOAD_SOCKET_ENV, buildPreloadHelper, defaultHelperDir } from '../setup/preload.js';
import { findExecutable, writePreloadWrapper } from '../setup/preload-wrapper.js';
import { UsageError } from './usage-error.js';

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
  helper.addCommand(wrapperCommand(dirOption));
  return helper;
}

/** `helper wrapper PATH`: an `<emulator>` script for libvirt (src/setup/preload-wrapper.ts). */
function wrapperCommand(dirOption: (command: Command) => Command): Command {
  const defaultEmulator = process.arch === 'arm64' ? 'qemu-system-aarch64' : 'qemu-system-x86_64';
  return dirOption(
    new Command('wrapper')
      .description('write an emulator wrapper (a libvirt <emulator>) that runs QEMU with the helper preloaded, building the helper first if needed')
      .argument('<path>', 'where to write the wrapper script')
      .option('--emulator <path>', 'the QEMU to exec (a name is looked up on PATH now)', defaultEmulator)
      .option('--socket <path>', `also set ${PRELOAD_SOCKET_ENV}, so the helper hands the stats fds to agent --listen PATH`),
  ).action((path: string, options: { dir?: string; emulator: string; socket?: string }) => {
    const emulator = findExecutable(options.emulator);
    if (emulator === undefined) throw new UsageError(`--emulator ${options.emulator} is not an absolute path or an executable on PATH`);
    if (options.socket !== undefined && !isAbsolute(options.socket)) throw new UsageError(`--socket ${options.socket} is not an absolute path`);
    buildPreloadHelper(options.dir);
    const preload = join(resolve(options.dir ?? defaultHelperDir()), PRELOAD_LINK_NAME);
    writePreloadWrapper(resolve(path), { preload, emulator, env: options.socket === undefined ? {} : { [PRELOAD_SOCKET_ENV]: options.socket } });
    process.stdout.write(`${resolve(path)}\n`);
  });
}
