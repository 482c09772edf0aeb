/**
 * The VMs the agent reads, for its log: one info line when a VM is found (name, pid, vCPUs),
 * when its number of vCPUs changes, and when it goes. A VMM that exits or destroys its VM is
 * normal life on a host, not a warning.
 */
import type { Problem } from '../sources/problem.js';
import type { StatsSource } from '../sources/source.js';
import type { Logger } from './log.js';

interface LoggedVm {
  readonly pid: number | undefined;
  readonly vmName: string | undefined;
  readonly vmUuid: string | undefined;
  vcpus: number;
}

/** What a log line about a VM calls it: "VM web-1 (process 1234)", "a VM of process 1234". */
function vmText(vm: { pid: number | undefined; vmName: string | undefined }): string {
  const process = vm.pid !== undefined ? `process ${vm.pid}` : 'no known process';
  return vm.vmName !== undefined ? `VM ${vm.vmName} (${process})` : `a VM of ${process}`;
}

export class VmLog {
  readonly #log: Logger;
  #vms = new Map<string, LoggedVm>();
  #last: readonly StatsSource[] | undefined;
  /** Processes whose exit was logged already: their VMs go without another line. */
  readonly #exited = new Set<number>();

  constructor(log: Logger) {
    this.#log = log;
  }

  /** The VM name known for a process, for a problem that does not carry one. */
  vmNameOf(pid: number | undefined): string | undefined {
    if (pid === undefined) return undefined;
    for (const vm of this.#vms.values()) if (vm.pid === pid && vm.vmName !== undefined) return vm.vmName;
    return undefined;
  }

  /** Logs a provider's problem: an exit at info (with the VM's name), anything else as a warning. */
  problem(problem: Problem, text: string): void {
    const vmName = problem.vmName ?? this.vmNameOf(problem.pid);
    const fields = { kind: problem.kind, processPid: problem.pid, ...(vmName !== undefined ? { vmName } : {}), code: problem.code };
    if (problem.kind === 'exited') {
      if (problem.pid !== undefined) this.#exited.add(problem.pid);
      this.#log.info(fields, text);
    } else if (problem.kind === 'no-schedstat') {
      // A VMM whose vCPUs share a thread is not something to fix: said, not warned.
      this.#log.info(fields, text);
    } else {
      this.#log.warn(fields, text);
    }
  }

  /** Compares the sources read now with those of the last call, and logs what changed. */
  update(sources: readonly StatsSource[]): void {
    if (sources === this.#last) return; // providers keep the same array until something changes
    this.#last = sources;
    const now = new Map<string, LoggedVm>();
    for (const source of sources) {
      // As the VM aggregation groups vCPUs: by owner and name.
      const key = `${source.pid}|${source.vmName}`;
      let vm = now.get(key);
      if (!vm) now.set(key, (vm = { pid: source.pid, vmName: source.vmName, vmUuid: source.vmUuid, vcpus: 0 }));
      if (source.file.target === 'vcpu') vm.vcpus++;
    }
    for (const [key, vm] of now) {
      const before = this.#vms.get(key);
      const fields = { processPid: vm.pid, vmName: vm.vmName, vmUuid: vm.vmUuid, vcpus: vm.vcpus };
      if (!before) this.#log.info(fields, `${vmText(vm)} found: ${vm.vcpus} vCPU(s)`);
      else if (before.vcpus !== vm.vcpus) this.#log.info({ ...fields, vcpusBefore: before.vcpus }, `${vmText(vm)}: ${vm.vcpus} vCPU(s), was ${before.vcpus}`);
    }
    for (const [key, vm] of this.#vms) {
      if (now.has(key) || (vm.pid !== undefined && this.#exited.has(vm.pid))) continue;
      this.#log.info({ processPid: vm.pid, vmName: vm.vmName, vmUuid: vm.vmUuid }, `${vmText(vm)} gone: its stats fds were closed`);
    }
    this.#exited.clear();
    this.#vms = now;
  }
}
