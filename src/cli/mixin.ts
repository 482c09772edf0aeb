/**
 * `kvm-stats-otel mixin`: writes the monitoring mixin (recording rules, alerts, Grafana
 * dashboards, a runbook and the config they were made with) for the kernel of the sources read,
 * in a unit mode, named as the metrics reach Prometheus (the agent's endpoint, or OTLP through a
 * collector). `npm run mixin` writes the checked-in mixin/ from the shipped recording.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { release } from 'node:os';
import { dirname, join } from 'node:path';
import { Command, Option } from 'commander';
import { SELF_TELEMETRY } from '../agent/telemetry-names.js';
import { demoFallback } from '../setup/demo-fallback.js';
import type { SourceOptions } from '../setup/open-sources.js';
import type { UnitMode } from '../otel/mapping.js';
import { isRecordingFile, readRecording } from '../sources/recording.js';
import { buildMixin } from '../views/mixin.js';
import { DEFAULT_MIXIN_CONFIG, readMixinConfig } from '../views/mixin-config.js';
import { NAMING_WAYS, type NamingWay } from '../views/mixin-names.js';
import { addSourceOptions } from './flags.js';
import { withSources } from './with-sources.js';

interface MixinFlags extends SourceOptions {
  out: string;
  units: UnitMode;
  names: NamingWay;
  config?: string;
}

/** The kernel the tables come from: a recording's host, else this one. */
function kernelOf(files: readonly string[]): string {
  for (const path of files) {
    if (isRecordingFile(path)) return readRecording(path).host.kernel ?? 'an unknown kernel';
  }
  return release();
}

function commandLine(flags: MixinFlags): string {
  const source = flags.file?.length ? flags.file.map((path) => `--file ${path}`).join(' ') : flags.pid?.length ? '--pid PID' : flags.scan ? '--scan' : '--demo';
  return [
    // Not --out: where the files went is no part of what they are.
    `kvm-stats-otel mixin ${source}`,
    ...(flags.units !== 'base' ? [`--units ${flags.units}`] : []),
    ...(flags.names !== 'agent' ? [`--names ${flags.names}`] : []),
    ...(flags.config !== undefined ? [`--config ${flags.config}`] : []),
  ].join(' ');
}

export function mixinCommand(): Command {
  const command = new Command('mixin').description('write Prometheus recording rules and alerts, Grafana dashboards and a runbook for this kernel\'s KVM stats (docs/mixin.md)');
  return addSourceOptions(command)
    .requiredOption('--out <dir>', 'the folder to write into (mixin/ in this repository)')
    .addOption(new Option('--units <mode>', 'the agent\'s unit mode the names are for: base (promtool-clean, seconds) or exact').choices(['base', 'exact']).default('base'))
    .addOption(new Option('--names <way>', 'agent: as the agent\'s --prometheus endpoint serves them; collector: as OTLP through an OpenTelemetry Collector (or a Prometheus OTLP receiver) names them').choices([...NAMING_WAYS]).default('agent'))
    .option('--config <file>', 'selectors, labels, thresholds and dashboard settings (JSON, as the config.json it writes); default the built-in one')
    .addHelpText('after', '\nWithout a source flag it reads a demo VM, or where this host has no KVM the shipped recording.')
    .action(async (flags: MixinFlags) => {
      const config = flags.config !== undefined ? readMixinConfig(flags.config) : DEFAULT_MIXIN_CONFIG;
      const given = flags.demo !== undefined || flags.pid?.length || flags.file?.length || flags.scan || flags.listen !== undefined;
      const options: SourceOptions = given ? flags : { ...flags, demo: 1 };
      await withSources(options, async ({ providers, sources }) => {
        const all = sources();
        const vcpu = all.find((source) => source.file.target === 'vcpu');
        if (!vcpu) throw new Error('no vCPU stats fd was read: the mixin is made from a vCPU\'s descriptor table');
        const vm = all.find((source) => source.file.target === 'vm');
        // Where no demo VM can be made, withSources replays the shipped recording instead.
        const files = demoFallback(options)?.sources.file ?? options.file ?? [];
        const from = `${providers.map((p) => p.description).join(', ')}, Linux ${kernelOf(files)}`;
        const mixin = buildMixin({
          vcpuTable: vcpu.file.table,
          vmTable: vm?.file.table,
          units: flags.units,
          naming: flags.names,
          config,
          selfTelemetry: SELF_TELEMETRY,
          from,
          command: commandLine(flags),
        });
        for (const [path, text] of mixin.files) {
          const target = join(flags.out, path);
          mkdirSync(dirname(target), { recursive: true });
          writeFileSync(target, text);
        }
        process.stderr.write(
          `kvm-stats-otel: wrote ${mixin.files.size} files to ${flags.out}: ${mixin.recorded.length} recording rules, ${mixin.alerts.length} alerts, ${[...mixin.files.keys()].filter((p) => p.startsWith('dashboards/')).length} dashboards, from ${from}\n` +
            mixin.leftOut.map((what) => `kvm-stats-otel: left out: ${what}\n`).join(''),
        );
      });
    });
}
