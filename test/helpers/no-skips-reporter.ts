/**
 * Fails the run when /dev/kvm is present and any test was skipped: tests may skip only where
 * KVM is missing, so a skip on a KVM host hides a test that should have run. A run narrowed
 * with -t (a name filter) skips the rest on purpose and is left alone.
 */
import { existsSync } from 'node:fs';
import type { Reporter, TestModule, Vitest } from 'vitest/node';

export default class NoSkipsReporter implements Reporter {
  #filtered = false;

  onInit(vitest: Vitest): void {
    this.#filtered = vitest.config.testNamePattern !== undefined;
  }

  onTestRunEnd(modules: ReadonlyArray<TestModule>): void {
    if (!existsSync('/dev/kvm') || this.#filtered) return;
    const skipped = modules.flatMap((module) => [...module.children.allTests('skipped')].map((test) => test.fullName));
    if (skipped.length === 0) return;
    process.stderr.write(`\n/dev/kvm is present but ${skipped.length} test(s) were skipped:\n  ${skipped.join('\n  ')}\n`);
    process.exitCode = 1;
  }
}
