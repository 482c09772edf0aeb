/**
 * The package as a user installs it. From a clean clone of HEAD: `npm ci` and `npm pack`; the
 * tarball holds the built library and CLI, the preload helper's sources, LICENSE and README;
 * installed into an empty app with production dependencies only, from the tarball and from the
 * clone's git URL, it imports (ESM and CommonJS), collects, exports over OTLP, and its
 * `kvm-stats-otel` binary runs. Its dependencies are exactly what dist/ imports at run time.
 * Needs the npm registry and git; no KVM (it reads a stats image).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildImage, writeImage } from '../helpers/image.js';
import { type PackageManifest, type Packed, dependencyMismatch, distImports, packFromCleanClone, uncommittedChanges } from '../helpers/pack.js';
import { ROOT } from '../helpers/processes.js';

const INSTALL_TIMEOUT = 300_000;
const MANIFEST = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as PackageManifest & { name: string; version: string; license: string; bin: Record<string, string>; devDependencies: Record<string, string> };

const npmEnv = { ...process.env, npm_config_audit: 'false', npm_config_fund: 'false', npm_config_update_notifier: 'false' };
const sh = (command: string, args: readonly string[], cwd: string): string => execFileSync(command, args, { cwd, encoding: 'utf8', env: npmEnv, stdio: ['ignore', 'pipe', 'pipe'] });

/** An empty app: a package.json and nothing else. */
function emptyApp(parent: string, name: string): string {
  const app = join(parent, name);
  mkdirSync(app);
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name, version: '1.0.0', private: true }));
  return app;
}

// The app's own code, as a user writes it: a producer over a saved image, and an OTLP export
// to a loopback server (the exporter loads its transport when it is made).
const ESM_APP = `import { createServer } from 'node:http';
import { ImageProvider, KvmOtlpMetricExporter, KvmStatsProducer, sourcesOf } from 'kvm-stats-otel';
const image = new ImageProvider(process.argv[2]);
await image.refresh();
const producer = new KvmStatsProducer({ sources: sourcesOf([image]) });
const { resourceMetrics, errors } = await producer.collect();
await image.close();
let received = 0;
const server = createServer((req, res) => { req.on('data', (chunk) => (received += chunk.length)); req.on('end', () => res.end()); });
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const exporter = new KvmOtlpMetricExporter({ url: 'http://127.0.0.1:' + server.address().port + '/v1/metrics' });
const code = await new Promise((resolve) => exporter.export(resourceMetrics, (result) => resolve(result.code)));
await exporter.shutdown();
server.close();
console.log(JSON.stringify({ errors: errors.length, names: resourceMetrics.scopeMetrics.flatMap((s) => s.metrics.map((m) => m.descriptor.name)), code, received }));
`;
const CJS_APP = `const { ImageProvider, KvmStatsProducer, KvmOtlpMetricExporter, sourcesOf } = require('kvm-stats-otel');
const image = new ImageProvider(process.argv[2]);
image.refresh().then(() => new KvmStatsProducer({ sources: sourcesOf([image]) }).collect()).then(async ({ resourceMetrics, errors }) => {
  await image.close();
  const exporter = new KvmOtlpMetricExporter({ protocol: 'grpc', url: 'http://127.0.0.1:4317' });
  await exporter.shutdown();
  console.log(JSON.stringify({ errors: errors.length, names: resourceMetrics.scopeMetrics.flatMap((s) => s.metrics.map((m) => m.descriptor.name)) }));
});
`;

/** What the package does in `app` where it is installed: import, collect, export, the binary. */
function checkInstalled(app: string, image: string): void {
  writeFileSync(join(app, 'esm.mjs'), ESM_APP);
  writeFileSync(join(app, 'cjs.cjs'), CJS_APP);
  const esm = JSON.parse(sh(process.execPath, ['esm.mjs', image], app));
  expect(esm).toEqual({ errors: 0, names: ['kvm.vcpu.exits'], code: 0, received: expect.any(Number) });
  expect(esm.received).toBeGreaterThan(0);
  // CommonJS: require() of this ES module (Node 20.19+ and 22.12+ load ES modules in require).
  const cjs = execFileSync(process.execPath, ['cjs.cjs', image], { cwd: app, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  expect(JSON.parse(cjs)).toEqual({ errors: 0, names: ['kvm.vcpu.exits'] });
  // The binary, as npm linked it.
  const bin = join(app, 'node_modules', '.bin', 'kvm-stats-otel');
  expect(sh(bin, ['--version'], app).trim()).toBe(MANIFEST.version);
  expect(sh(bin, ['read', '--file', image], app)).toMatch(/^\s+kvm\.vcpu\.exits\s+sum\s+1\s+4242$/m);
  // Production dependencies only: a dev dependency of the package is there only where a
  // production dependency needs it too (@types/node is one of protobufjs's), never for itself.
  const peers = new Set(Object.keys(MANIFEST.peerDependencies ?? {}));
  for (const name of Object.keys(MANIFEST.devDependencies).filter((dev) => !peers.has(dev) && existsSync(join(app, 'node_modules', dev)))) {
    const explained = JSON.parse(sh('npm', ['explain', name, '--json'], app)) as { dependents: { from?: { name?: string } }[] }[];
    const dependents = explained.flatMap((node) => node.dependents.map((dependent) => dependent.from?.name));
    expect(dependents, `${name} is installed for ${dependents.join(', ')}`).not.toContain(MANIFEST.name);
    expect(dependents.length, `${name} is installed for no production dependency`).toBeGreaterThan(0);
  }
}

describe('dependencyMismatch', () => {
  it('finds a package imported but not declared, and one declared but not imported', () => {
    const dist = mkdtempSync(join(tmpdir(), 'kvm-stats-dist-'));
    try {
      writeFileSync(join(dist, 'a.js'), `import x from 'used';\nimport { readFileSync } from 'node:fs';\nimport path from 'path';\nconst y = require('@scope/required/sub');\nconst z = await import('dynamic');\nimport './b.js';\n`);
      writeFileSync(join(dist, 'a.d.ts'), `/// <reference types="node" />\nimport type { T } from 'typed-only';\n`);
      const imports = distImports(dist);
      expect([...imports.runtime].sort()).toEqual(['@scope/required', 'dynamic', 'used']);
      expect(dependencyMismatch(imports, { dependencies: { used: '1', unused: '1' }, peerDependencies: { dynamic: '1' } })).toEqual({
        undeclared: ['@scope/required'],
        unused: ['unused'],
        typesUndeclared: ['typed-only'],
      });
      expect(dependencyMismatch(imports, { dependencies: { used: '1', '@scope/required': '1', 'typed-only': '1' }, peerDependencies: { dynamic: '1' } })).toEqual({
        undeclared: [],
        unused: ['typed-only'],
        typesUndeclared: [],
      });
    } finally {
      rmSync(dist, { recursive: true, force: true });
    }
  });
});

describe('the package from a clean clone (npm pack, npm install --omit=dev)', () => {
  let packed: Packed;
  let work = '';
  let image = '';
  let files: string[] = [];

  beforeAll(async () => {
    const changes = uncommittedChanges();
    if (changes) console.warn(`package test: a clean clone has only what is committed; not in it:\n${changes}`);
    packed = await packFromCleanClone();
    work = mkdtempSync(join(tmpdir(), 'kvm-stats-package-'));
    image = writeImage(buildImage({ id: 'kvm-4242/vcpu-0', descs: [{ name: 'exits', values: [4242] }] }), 'package');
    files = sh('tar', ['-tzf', packed.tarball], work).trim().split('\n').sort();
  }, INSTALL_TIMEOUT);

  afterAll(() => {
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('holds the built library and CLI, every file the build makes, the preload helper, the recording, the mixin, LICENSE and README, and no sources or tests', () => {
    for (const file of ['package/package.json', 'package/LICENSE', 'package/README.md', 'package/dist/index.js', 'package/dist/index.d.ts', `package/${MANIFEST.bin['kvm-stats-otel']!.replace(/^\.\//, '')}`]) {
      expect(files).toContain(file);
    }
    // A module (and its declarations) for every source file of the commit, and the preload
    // helper's every file.
    const under = (dir: string): string[] =>
      readdirSync(dir, { withFileTypes: true, recursive: true })
        .filter((entry) => entry.isFile())
        .map((entry) => join(entry.parentPath, entry.name).slice(dir.length + 1));
    const sources = under(join(packed.clone, 'src')).filter((file) => file.endsWith('.ts'));
    expect(sources.length).toBeGreaterThan(10);
    expect(files).toEqual(expect.arrayContaining(sources.flatMap((file) => [`package/dist/${file.replace(/\.ts$/, '.js')}`, `package/dist/${file.replace(/\.ts$/, '.d.ts')}`])));
    // The preload helper's sources, the recording replayed without KVM, and the operators' mixin.
    for (const dir of ['preload-helper', 'recordings', 'mixin']) {
      expect(files).toEqual(expect.arrayContaining(under(join(packed.clone, dir)).map((file) => `package/${dir}/${file}`)));
    }
    expect(files.filter((file) => /^package\/(src|test|scripts|examples|node_modules)\//.test(file))).toEqual([]);
    expect(MANIFEST.license).toBe('Apache-2.0');
    const license = sh('tar', ['-xzOf', packed.tarball, 'package/LICENSE'], work);
    expect(license).toMatch(/^\s*Apache License\s+Version 2\.0, January 2004/);
  });

  it('depends on exactly the packages its dist/ imports at run time, no more and no fewer', () => {
    const unpacked = join(work, 'unpacked');
    mkdirSync(unpacked);
    sh('tar', ['-xzf', packed.tarball, '-C', unpacked], work);
    const manifest = JSON.parse(readFileSync(join(unpacked, 'package', 'package.json'), 'utf8')) as PackageManifest;
    const imports = distImports(join(unpacked, 'package', 'dist'));
    expect(imports.runtime.size).toBeGreaterThan(3);
    expect(dependencyMismatch(imports, manifest)).toEqual({ undeclared: [], unused: [], typesUndeclared: [] });
  });

  it('installed from the tarball into an empty app with --omit=dev: imports (ESM, CommonJS), collects, exports, and its binary runs', () => {
    const app = emptyApp(work, 'from-tarball');
    sh('npm', ['install', '--omit=dev', packed.tarball], app);
    checkInstalled(app, image);
  }, INSTALL_TIMEOUT);

  it('installed from the git URL of a clean clone (npm runs prepare there) with --omit=dev: the same', () => {
    const app = emptyApp(work, 'from-git');
    sh('npm', ['install', '--omit=dev', `git+file://${packed.clone}`], app);
    checkInstalled(app, image);
  }, INSTALL_TIMEOUT);
});
