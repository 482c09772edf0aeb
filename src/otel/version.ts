/** This package's version, for the instrumentation scope. */
import { createRequire } from 'node:module';

// src/otel and dist/otel are both two levels below package.json.
export const SCOPE_VERSION: string = (createRequire(import.meta.url)('../../package.json') as { version: string }).version;
