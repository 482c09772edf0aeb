/**
 * The agent's V8 heap sizing, set before the command line's other modules load (main.ts imports
 * this first): loading them grows V8's young generation to 16 MiB, which the agent then keeps
 * for good (agent/heap.ts, keepYoungGenerationSmall; 8 MiB set here, about 10 MiB less RSS at
 * 10,000 fds than set later). Only for `agent`, and not with `--console`: the console writes
 * megabytes of text per export, and with a small young generation all of it was promoted (peak
 * RSS 2.9 GiB against 0.8 at 10,000 fds, docs/deploy-memory.md). The other commands, the bench
 * among them, run with V8's defaults.
 */
import { keepYoungGenerationSmall } from '../agent/heap.js';

const args = process.argv.slice(2);
if (args.find((arg) => !arg.startsWith('-')) === 'agent' && !args.includes('--console')) keepYoungGenerationSmall();
