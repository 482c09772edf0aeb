/** Tests that need /dev/kvm skip, with the reason printed, only where it is missing. */
import { existsSync } from 'node:fs';
import { describe } from 'vitest';

export const HAS_KVM = existsSync('/dev/kvm');
if (!HAS_KVM) console.warn('skipping KVM tests: /dev/kvm is missing on this machine');

/** describe() for tests that need /dev/kvm. */
export const describeKvm: typeof describe = HAS_KVM ? describe : (describe.skip as typeof describe);
