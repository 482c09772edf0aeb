import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts', 'examples/**/*.test.ts'],
    reporters: ['default', './test/helpers/no-skips-reporter.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Tests start real VMs and threads: two cores, so keep files from piling up.
    maxWorkers: 2,
  },
});
