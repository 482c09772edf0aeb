/**
 * The agent's V8 heap sizing, set before the command line's other modules load (main.ts imports
 * this first): loading them grows V8's young generation to 16 MiB, which the agent then keeps
 * for good, 18 MiB of its RSS at 10,000 fds (agent/heap.ts, keepYoungGenerationSmall). Only for
 * `agent`: the other commands, the bench among them, run with V8's defaults.
 */
import { keepYoungGenerationSmall } from '../agent/heap.js';

if (process.argv.slice(2).find((arg) => !arg.startsWith('-')) === 'agent') keepYoungGenerationSmall();
