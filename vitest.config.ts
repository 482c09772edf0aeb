import { defineConfig } from 'vitest/config';

export default defineConfig({
  // Examples import the package by name, as users do; tests run them on the sources.
  resolve: { alias: { 'kvm-stats-otel': new URL('./src/index.ts', import.meta.url).pathname } },
  test: {
    include: ['test/**/*.test.ts', 'examples/**/*.test.ts'],
    reporters: ['default', './test/helpers/no-skips-reporter.ts'],
    globalSetup: ['./test/helpers/build.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Tests start real VMs and threads: two cores, so keep files from piling up.
    maxWorkers: 2,
  },
});
