/**
 * Which flag gives what a library message says is needed. The library says what failed and
 * what is needed without naming flags; the CLI adds them here: to the problems reported while
 * reading (by kind) and to the error that ends a command (by type, call and errno).
 */
import { SHIPPED_RECORDING, shownPath } from '../setup/demo-fallback.js';
import { NativeError } from '../native/errors.js';
import { KvmUnavailableError } from '../sources/kvm-check.js';
import { HandoverPathError } from '../sources/handover-receiver.js';
import { HandoverTimeoutError } from '../setup/handover-sender.js';
import type { Problem } from '../sources/problem.js';
import { terminalText } from '../views/terminal.js';

/** A problem as one line, with the flag that helps where there is one. */
export function problemText(problem: Problem): string {
  switch (problem.kind) {
    case 'no-access':
      // The scan cannot look into another user's VMM: a privileged handoff can give its fds.
      return problem.pid !== undefined ? `${problem.message} (handoff --pid ${problem.pid})` : problem.message;
    default:
      return problem.message;
  }
}

/** Writes each problem as one line on stderr, as the one-shot commands report them. */
export function reportToStderr(problem: Problem): void {
  process.stderr.write(`kvm-stats-otel: ${terminalText(problemText(problem))}\n`);
}

/** An error's message, with the flag that helps where there is one. */
export function errorText(error: Error, verbose = false): string {
  return `${error.message}${flagHint(error, verbose)}`;
}

function flagHint(error: Error, verbose: boolean): string {
  if (error instanceof HandoverPathError) return ' for --listen';
  if (error instanceof HandoverTimeoutError) return ' (--timeout MS)';
  if (error instanceof KvmUnavailableError) return `. Without KVM, npm start and --file ${shownPath(SHIPPED_RECORDING)} replay a recording instead`;
  if (error instanceof NativeError) {
    if (error.call === 'KVM_GET_STATS_FD' && error.code === 'EIO') return ' (read --pid)';
    if (error.call.startsWith('connect ') && (error.code === 'ENOENT' || error.code === 'ECONNREFUSED')) return ' (agent --listen PATH)';
    if (error.unexpected && !verbose) return ' with the output of --verbose';
  }
  return '';
}
