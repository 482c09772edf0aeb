/** What the demo VM's main thread and its vCPU threads share. */

/** Word 0 of the control array: what the main thread asks of every vCPU thread. */
export const Command = { Run: 0, Pause: 1, Stop: 2 } as const;

/** Word 1 + i: what vCPU thread i is doing. */
export const State = { Starting: 0, Running: 1, Paused: 2, Stopped: 3 } as const;
export type State = (typeof State)[keyof typeof State];

export interface GuestWorkerData {
  readonly control: SharedArrayBuffer;
  readonly index: number;
  readonly vcpuFd: number;
  readonly vcpuId: number;
  readonly mmapSize: number;
  readonly entry: number;
}
