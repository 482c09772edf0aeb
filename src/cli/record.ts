/**
 * `kvm-stats-otel record`: several snapshots of stats fds while their guests run, with who owns
 * them, into one small file that `--file` replays in a loop on any machine (docs/recordings.md).
 * `npm run record` on a KVM host makes recordings/demo.kvmrec.json.gz this way.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { Command } from 'commander';
import type { SourceOptions } from '../setup/open-sources.js';
import { SCOPE_VERSION } from '../otel/version.js';
import { RECORDING_LIMITS, recordSources, writeRecording } from '../sources/recording.js';
import { UsageError } from './usage-error.js';
import { addSourceOptions, integerOption } from './flags.js';
import { withSources } from './with-sources.js';

interface RecordFlags extends SourceOptions {
  out: string;
  snapshots: number;
  interval: number;
  wait: number;
}

export function recordCommand(): Command {
  return addSourceOptions(
    new Command('record').description('record stats fds several times while their guests run, with who owns them, into one file that --file replays in a loop'),
  )
    .requiredOption('--out <file>', 'the recording to write (gzip\'d JSON, a few KB per VM; docs/recordings.md)')
    .option('--snapshots <n>', 'snapshots to take: the first is each fd\'s whole image, the others its data', integerOption(1, RECORDING_LIMITS.snapshots), 10)
    .option('--interval <ms>', 'time between snapshots', integerOption(10, 3_600_000), 1000)
    .option('--wait <ms>', 'let a demo guest run this long before the first snapshot', integerOption(0, 60_000), 1000)
    .addHelpText('after', '\nCtrl-C stops early and writes the snapshots taken so far. A demo VM needs /dev/kvm here: nothing is replayed in its place.')
    .action(async (flags: RecordFlags) => {
      if (flags.file !== undefined) throw new UsageError('record reads live stats fds (--demo, --pid or --scan); a saved image or recording given with --file is one already');
      // A hand-over socket has nothing yet when record starts: the agent is what waits on one.
      if (flags.listen !== undefined) throw new UsageError('record reads the stats fds it can open now (--demo, --pid or --scan); fds handed over on a socket arrive later: record the VMM with --pid instead');
      await withSources(
        flags,
        async ({ providers, sources }) => {
          if (flags.demo !== undefined) await sleep(flags.wait);
          const stop = new AbortController();
          const abort = (): void => stop.abort();
          process.once('SIGINT', abort).once('SIGTERM', abort);
          try {
            const taken = sources();
            const recording = await recordSources(taken, {
              snapshots: flags.snapshots,
              intervalMs: flags.interval,
              madeBy: `kvm-stats-otel record ${SCOPE_VERSION}`,
              note: `Recorded from ${providers.map((p) => p.description).join(', ')}, ${flags.snapshots} snapshots ${flags.interval} ms apart.`,
              signal: stop.signal,
            });
            const bytes = writeRecording(flags.out, recording);
            const fds = recording.vms.reduce((n, vm) => n + vm.fds.length, 0);
            process.stderr.write(`kvm-stats-otel: recorded ${fds} stats fd(s) of ${recording.vms.length} VM(s), ${recording.snapshotsMs.length} snapshot(s), to ${flags.out} (${bytes} bytes)\n`);
          } finally {
            process.off('SIGINT', abort).off('SIGTERM', abort);
          }
        },
        // A recording of a replay is no recording of a VM.
        { fallback: false },
      );
    });
}
