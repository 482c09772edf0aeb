/**
 * Saved stats images: the bytes of a stats fd written to a regular file (`read --save`), read
 * back through the same reader. For trying things without /dev/kvm and for bug reports.
 */
import { StatsFile } from '../stats/stats-file.js';
import { type StatsSource, statsSource } from './source.js';

export function openImageSource(path: string): StatsSource {
  return statsSource(StatsFile.openImage(path), {}, path);
}

/** A file name for a source's image: "kvm-1234.vm.kvmstats", "kvm-1234.vcpu-0.kvmstats". */
export function imageFileName(source: StatsSource): string {
  const file = source.file;
  const who = file.target === 'vcpu' ? `vcpu-${file.vcpuId}` : 'vm';
  return `kvm-${source.pid ?? file.threadId}${source.vmName ? `-${source.vmName.replace(/[^A-Za-z0-9_.-]/g, '_')}` : ''}.${who}.kvmstats`;
}
