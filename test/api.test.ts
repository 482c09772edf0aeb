/**
 * The package's public surface, src/index.ts, listed name by name: adding, removing or renaming
 * an export fails here, so that a change to what users may import is a deliberate one. Values
 * are read from the module itself; types from TypeScript's checker, which sees type-only exports.
 */
import { dirname, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { describe, expect, expectTypeOf, it } from 'vitest';
import type * as api from '../src/index.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const ENTRY = resolve(ROOT, 'src', 'index.ts');

/** Names a program can use at run time. */
const VALUES = [
  'ATTR_KVM_VCPU_ID',
  'ATTR_KVM_VCPU_INDEX',
  'ATTR_KVM_VM_NAME',
  'ATTR_KVM_VM_UUID',
  'ATTR_PROCESS_PID',
  'DemoProvider',
  'HandoverProvider',
  'ImageProvider',
  'KvmOtlpMetricExporter',
  'KvmStatsProducer',
  'KvmUnavailableError',
  'METRIC_PREFIX',
  'NativeError',
  'ProcessProvider',
  'PrometheusTextExporter',
  'SCOPE_NAME',
  'ScanProvider',
  'SchedstatFile',
  'StatsFile',
  'StatsImageError',
  'StatsReadError',
  'attachSchedstats',
  'closeSources',
  'observeKvmStats',
  'sourcesOf',
  'statsSource',
];

/** Names that exist only as types. */
const TYPES = [
  'DemoVmOptions',
  'DescriptorTable',
  'FramePairing',
  'HandoverProviderOptions',
  'KvmOtlpMetricExporterOptions',
  'KvmStatsInstruments',
  'KvmStatsInstrumentsOptions',
  'KvmStatsProducerOptions',
  'KvmUnavailableCause',
  'OtlpProtocol',
  'Problem',
  'ProblemKind',
  'ProblemReporter',
  'PrometheusServingLimits',
  'PrometheusTextExporterOptions',
  'ScanProviderOptions',
  'SkippedStat',
  'SourceAttributes',
  'SourceProvider',
  'SourceSet',
  'StatBase',
  'StatDescriptor',
  'StatType',
  'StatUnit',
  'StatsFileOptions',
  'StatsHeader',
  'StatsOwner',
  'StatsSource',
  'StatsTarget',
  'UnitMode',
  'VcpuAggregation',
];

const sorted = (names: Iterable<string>) => [...names].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));

/** The checker's view of the entry: every exported name, and for each the declarations it resolves to. */
let checked: { checker: ts.TypeChecker; symbols: ts.Symbol[] } | undefined;
function checkedExports(): { checker: ts.TypeChecker; symbols: ts.Symbol[] } {
  if (checked) return checked;
  const config = ts.getParsedCommandLineOfConfigFile(resolve(ROOT, 'tsconfig.json'), {}, { ...ts.sys, onUnRecoverableConfigFileDiagnostic: () => undefined });
  const program = ts.createProgram([ENTRY], { ...config!.options, noEmit: true });
  const checker = program.getTypeChecker();
  const module = checker.getSymbolAtLocation(program.getSourceFile(ENTRY)!)!;
  checked = { checker, symbols: checker.getExportsOfModule(module) };
  return checked;
}

const resolved = (checker: ts.TypeChecker, symbol: ts.Symbol) => (symbol.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(symbol) : symbol);

describe('the public API (src/index.ts)', () => {
  it('exports exactly these values', async () => {
    const module = await import('../src/index.js');
    expect(sorted(Object.keys(module))).toEqual(sorted(VALUES));
  });

  it('exports exactly these names in all, the rest as types only', () => {
    const { symbols } = checkedExports();
    expect(sorted(symbols.map((s) => s.name))).toEqual(sorted([...VALUES, ...TYPES]));
  }, 120_000);

  it('exports every type of this package that an exported function, constructor or option takes', () => {
    // A user must be able to name what they pass in: an option typed with an unexported alias
    // (as SourceAttributes and VcpuAggregation once were) can be written but not named.
    const { checker, symbols } = checkedExports();
    const exported = new Set(symbols.map((s) => resolved(checker, s)));
    const missing = new Set<string>();
    const seen = new Set<ts.Node>();
    const inSrc = (node: ts.Node) => node.getSourceFile().fileName.startsWith(resolve(ROOT, 'src'));

    /** Every type of src/ a type node names, and what those name in turn if they are exported. */
    const visitType = (node: ts.Node | undefined): void => {
      if (!node || seen.has(node)) return;
      seen.add(node);
      if (ts.isTypeReferenceNode(node) || ts.isExpressionWithTypeArguments(node)) {
        const name = ts.isTypeReferenceNode(node) ? node.typeName : node.expression;
        const symbol = checker.getSymbolAtLocation(name);
        const target = symbol && resolved(checker, symbol);
        const declaration = target?.declarations?.[0];
        if (target && declaration && inSrc(declaration) && !(target.flags & ts.SymbolFlags.TypeParameter)) {
          if (!exported.has(target)) missing.add(`${target.name}, named in ${relative(ROOT, node.getSourceFile().fileName)}`);
          else visitDeclaration(declaration);
        }
      }
      ts.forEachChild(node, visitType);
    };
    const visitParameters = (fn: ts.SignatureDeclarationBase) => fn.parameters.forEach((p) => visitType(p.type));
    const visitDeclaration = (declaration: ts.Declaration): void => {
      if (seen.has(declaration)) return;
      seen.add(declaration);
      if (ts.isFunctionDeclaration(declaration)) visitParameters(declaration);
      else if (ts.isInterfaceDeclaration(declaration)) declaration.members.forEach((m) => ts.forEachChild(m, visitType));
      else if (ts.isTypeAliasDeclaration(declaration)) visitType(declaration.type);
      else if (ts.isClassDeclaration(declaration)) {
        for (const member of declaration.members) {
          const isPublic = !(ts.getCombinedModifierFlags(member) & (ts.ModifierFlags.Private | ts.ModifierFlags.Protected));
          if (!isPublic) continue;
          if (ts.isConstructorDeclaration(member)) visitParameters(member);
          else if (ts.isMethodDeclaration(member) && ts.getCombinedModifierFlags(member) & ts.ModifierFlags.Static) visitParameters(member);
        }
      }
    };
    for (const symbol of exported) for (const declaration of symbol.declarations ?? []) visitDeclaration(declaration);
    expect(sorted(missing), 'types taken by the public API but not exported from src/index.ts').toEqual([]);
  }, 120_000);

  it('types the options as the options say (checked by tsc)', () => {
    expectTypeOf<api.KvmStatsProducerOptions['vcpuAggregation']>().toEqualTypeOf<api.VcpuAggregation | undefined>();
    expectTypeOf<api.KvmStatsProducerOptions['units']>().toEqualTypeOf<api.UnitMode | undefined>();
    expectTypeOf<api.StatsOwner['attributes']>().toEqualTypeOf<api.SourceAttributes | undefined>();
    expectTypeOf<ReturnType<typeof api.observeKvmStats>>().toEqualTypeOf<api.KvmStatsInstruments>();
    expectTypeOf<api.SourceProvider>().toHaveProperty('sources');
  });
});
