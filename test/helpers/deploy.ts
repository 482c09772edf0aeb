/**
 * The deployment files as data: deploy/Containerfile's instructions, deploy/daemonset.yaml's
 * documents and the agent's container in it, deploy/kvm-stats-otel.service's settings.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { ROOT } from './processes.js';

export const DEPLOY = join(ROOT, 'deploy');

export interface Instruction {
  readonly keyword: string;
  readonly args: string;
}

/** A Containerfile's instructions in order: comments dropped, continued lines joined. */
export function containerfile(path = join(DEPLOY, 'Containerfile')): Instruction[] {
  const logical = readFileSync(path, 'utf8')
    .split('\n')
    .filter((line) => !/^\s*#/.test(line))
    .join('\n')
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((line) => line.trim())
    .filter(Boolean);
  return logical.map((line) => {
    const [, keyword, args] = /^(\S+)\s+(.*)$/.exec(line)!;
    return { keyword: keyword!.toUpperCase(), args: args!.trim() };
  });
}

/** The one instruction of this keyword; an error when there are none or several. */
export function only(instructions: readonly Instruction[], keyword: string): string {
  const found = instructions.filter((instruction) => instruction.keyword === keyword);
  if (found.length !== 1) throw new Error(`the Containerfile has ${found.length} ${keyword} instructions; the recipe's test reads one`);
  return found[0]!.args;
}

export interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { fieldRef?: { fieldPath: string } };
}

export interface Container {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  env?: EnvVar[];
  securityContext: {
    runAsUser?: number;
    runAsGroup?: number;
    allowPrivilegeEscalation?: boolean;
    readOnlyRootFilesystem?: boolean;
    capabilities?: { drop?: string[]; add?: string[] };
    seccompProfile?: { type: string };
    appArmorProfile?: { type: string };
  };
  resources: { requests: { cpu?: string; memory: string }; limits: { memory: string } };
}

export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  spec?: { template: { metadata: { annotations?: Record<string, string> }; spec: { hostPID?: boolean; containers: Container[] } } };
}

/** Every document of deploy/daemonset.yaml. */
export function daemonsetFile(): K8sObject[] {
  return parseAllDocuments(readFileSync(join(DEPLOY, 'daemonset.yaml'), 'utf8')).map((document) => {
    if (document.errors.length > 0) throw new Error(`deploy/daemonset.yaml: ${document.errors[0]!.message}`);
    return document.toJS() as K8sObject;
  });
}

/** The DaemonSet and its agent container. */
export function daemonset(): { object: K8sObject; container: Container } {
  const object = daemonsetFile().find((document) => document.kind === 'DaemonSet')!;
  const container = object.spec!.template.spec.containers.find((c) => c.name === 'agent')!;
  return { object, container };
}

/** A unit file's key=value settings (the last one of a key wins, as systemd reads them). */
export function unitSettings(path = join(DEPLOY, 'kvm-stats-otel.service')): Map<string, string> {
  const settings = new Map<string, string>();
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    const match = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (match) settings.set(match[1]!, match[2]!);
  }
  return settings;
}

/** A Kubernetes memory quantity ("96Mi", "1Gi") in MiB. */
export function mebibytes(quantity: string): number {
  const match = /^(\d+)(Mi|Gi)$/.exec(quantity);
  if (!match) throw new Error(`memory quantity ${quantity}: the deployment files use Mi or Gi`);
  return Number(match[1]) * (match[2] === 'Gi' ? 1024 : 1);
}

/** The mask /proc/PID/status shows (CapEff etc., hexadecimal) for capabilities named as in the
 * deployment files (SYS_PTRACE), their numbers read from <linux/capability.h>. */
export function capabilityMask(names: readonly string[]): bigint {
  const header = readFileSync('/usr/include/linux/capability.h', 'utf8');
  let mask = 0n;
  for (const name of names) {
    const match = new RegExp(`^#define CAP_${name}\\s+(\\d+)$`, 'm').exec(header);
    if (!match) throw new Error(`CAP_${name} is not in <linux/capability.h>`);
    mask |= 1n << BigInt(match[1]!);
  }
  return mask;
}
