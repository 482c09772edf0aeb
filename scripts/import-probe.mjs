/**
 * What one import costs, in a fresh Node.js process: the files it loads (ES modules seen by a
 * loader hook, CommonJS ones in require.cache) and its wall time. Plain JavaScript, so that
 * nothing but Node itself runs before the import. scripts/measure-import.ts runs it many times
 * and test/system/lean-import.test.ts asserts on what it finds.
 *
 *   node scripts/import-probe.mjs SPECIFIER [--files] [--exporter PROTOCOL]
 *
 * Prints one JSON line: { ms, files } (files only with --files, which adds the hook's own
 * cost to ms), and with --exporter the files that making a KvmOtlpMetricExporter of that
 * protocol loads on top (exporterFiles) and the time it takes (exporterMs).
 */
import { createRequire, register } from 'node:module';
import { MessageChannel } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';

const [specifier, ...rest] = process.argv.slice(2);
const withFiles = rest.includes('--files');
const protocol = rest.includes('--exporter') ? rest[rest.indexOf('--exporter') + 1] : undefined;
const require = createRequire(import.meta.url);

const esm = new Set();
let port;
if (withFiles) {
  // The load hook runs on the loader's own thread: it posts every URL it loads back here.
  const channel = new MessageChannel();
  port = channel.port1;
  port.on('message', (url) => esm.add(url));
  const hooks = `let port; export function initialize(data) { port = data.port; }
export async function load(url, context, next) { port.postMessage(url); return next(url, context); }`;
  register(`data:text/javascript,${encodeURIComponent(hooks)}`, { data: { port: channel.port2 }, transferList: [channel.port2] });
}

/** Every file loaded so far, as paths. */
function loaded() {
  const files = new Set(Object.keys(require.cache));
  for (const url of esm) if (url.startsWith('file:')) files.add(fileURLToPath(url));
  files.delete(fileURLToPath(import.meta.url));
  return files;
}

/** Lets the hook thread's messages arrive. */
const settle = () => new Promise((resolve) => setTimeout(resolve, 50));

const start = performance.now();
const module = await import(specifier);
const ms = performance.now() - start;
const result = { ms };
let before = new Set();
if (withFiles) {
  await settle();
  before = loaded();
  result.files = [...before].sort();
}
if (protocol !== undefined) {
  const started = performance.now();
  const exporter = new module.KvmOtlpMetricExporter({ protocol, url: protocol === 'grpc' ? 'http://127.0.0.1:4317' : 'http://127.0.0.1:4318/v1/metrics' });
  result.exporterMs = performance.now() - started;
  await exporter.shutdown();
  if (withFiles) {
    await settle();
    result.exporterFiles = [...loaded()].filter((file) => !before.has(file)).sort();
  }
}
port?.close();
console.log(JSON.stringify(result));
