/** The stats fds a command's source flags ask for, open for as long as the command runs. */
import { demoFallback } from '../setup/demo-fallback.js';
import { type OpenSources, type SourceOptions, openSources } from '../setup/open-sources.js';
import { inFlagTerms } from './flags.js';
import { reportToStderr } from './hints.js';

/**
 * Opens what the flags ask for, gives it to `use`, and closes every fd after, whatever happens.
 * Problems with single fds are printed on stderr; no stats fd readable at all is an error.
 * Where a demo VM cannot be made here, the shipped recording is replayed in its place, said in
 * one line on stderr, unless `fallback` is false (a command that needs a real VM).
 */
export async function withSources<T>(options: SourceOptions, use: (open: OpenSources) => Promise<T>, { fallback = true }: { fallback?: boolean } = {}): Promise<T> {
  let open: OpenSources;
  try {
    const instead = fallback ? demoFallback(options) : undefined;
    if (instead) process.stderr.write(`kvm-stats-otel: ${instead.notice}\n`);
    open = await openSources(instead?.sources ?? options, reportToStderr);
  } catch (error) {
    throw inFlagTerms(error);
  }
  try {
    if (open.sources().length === 0) throw new Error('no stats fd could be read');
    return await use(open);
  } finally {
    await open.close();
  }
}
