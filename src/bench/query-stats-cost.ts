/**
 * The other way to get the same numbers: QEMU's QMP `query-stats`, which opens the VM's and
 * each vCPU's stats fd, reads them and answers in JSON. Measured per VM (one query for the VM
 * target, one for all its vCPUs) on real, idle QEMU guests.
 */
import { QemuGuest, qemuAvailable } from './qemu.js';
import { type Iterations, type Summary, sample, summarize } from './samples.js';

export interface QmpOptions {
  readonly guests: number;
  readonly vcpus: number;
  readonly iterations: Iterations;
}

export type QmpResult = { readonly perVm: Summary } | { readonly skipped: string };

export async function measureQmp(options: QmpOptions): Promise<QmpResult> {
  if (options.guests < 1) return { skipped: 'no QEMU guests asked for' };
  if (!qemuAvailable()) return { skipped: 'qemu-system-x86_64 is not installed' };
  const guests: QemuGuest[] = [];
  try {
    for (let i = 0; i < options.guests; i++) guests.push(await QemuGuest.start({ vcpus: options.vcpus, name: `kvm-stats-bench-${i}` }));
    const perVm = async (guest: QemuGuest): Promise<void> => {
      await guest.qmp.execute('query-stats', { target: 'vm' });
      await guest.qmp.execute('query-stats', { target: 'vcpu' });
    };
    // Proves the query works before timing it: an old QEMU has no query-stats.
    for (const guest of guests) await perVm(guest);
    const samples = await sample(options.iterations, guests.map((guest) => () => perVm(guest)));
    return { perVm: summarize(samples.flat()) };
  } finally {
    for (const guest of guests) await guest.stop();
  }
}
