/**
 * The C pread floor: the same preads as the koffi floor (every fd's data block, at its data
 * offset, into one buffer), made by a C loop in one FFI call, so that the per-call cost of the
 * FFI is out of it. The loop is compiled with the host's C compiler when the bench starts, into a
 * temporary shared object loaded with koffi; without a compiler the C floor is not measured and
 * the bench says why. Bench-only: the read path never uses it.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import koffi from 'koffi';
import type { StatsSource } from '../sources/source.js';

const SOURCE = `#include <stdint.h>
#include <unistd.h>
/* Every fd's block into one buffer, as the koffi floor does; the first failure stops it. */
int64_t pread_all(const int32_t *fds, const int64_t *offsets, const int32_t *sizes, int32_t n, uint8_t *buffer) {
  int64_t total = 0;
  for (int32_t i = 0; i < n; i++) {
    ssize_t got = pread(fds[i], buffer, (size_t)sizes[i], (off_t)offsets[i]);
    if (got < 0) return -1 - (int64_t)i;
    total += got;
  }
  return total;
}
`;

type PreadAll = (fds: Int32Array, offsets: BigInt64Array, sizes: Int32Array, n: number, buffer: Uint8Array) => bigint | number;

let compiled: PreadAll | { readonly skipped: string } | undefined;

/** Compiles and loads the loop once per process; the object file is removed once loaded. */
function preadAll(): PreadAll | { readonly skipped: string } {
  if (compiled) return compiled;
  const dir = mkdtempSync(join(tmpdir(), 'kvm-stats-otel-c-floor-'));
  try {
    writeFileSync(join(dir, 'floor.c'), SOURCE);
    const object = join(dir, 'floor.so');
    try {
      execFileSync(process.env.CC ?? 'cc', ['-O2', '-shared', '-fPIC', '-o', object, join(dir, 'floor.c')], { stdio: ['ignore', 'ignore', 'pipe'] });
    } catch (error) {
      return (compiled = { skipped: `compiling its C loop failed (${(error as Error).message.split('\n')[0]}): install a C compiler (cc) or set CC` });
    }
    const library = koffi.load(object);
    compiled = library.func('pread_all', 'int64_t', ['int32_t *', 'int64_t *', 'int32_t *', 'int32_t', 'uint8_t *']) as PreadAll;
    return compiled;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The C floor over a set of sources; `skipped` says why there is none. */
export type CFloor = { readonly run: () => void } | { readonly skipped: string };

export function cPreadFloor(sources: readonly StatsSource[]): CFloor {
  const call = preadAll();
  if ('skipped' in call) return call;
  const n = sources.length;
  const fds = Int32Array.from(sources, (s) => s.file.fd);
  const offsets = BigInt64Array.from(sources, (s) => BigInt(s.file.header.dataOffset));
  const sizes = Int32Array.from(sources, (s) => s.file.table.dataSize);
  const buffer = new Uint8Array(Math.max(0, ...sizes));
  const expected = sizes.reduce((sum, size) => sum + size, 0);
  return {
    run: () => {
      const got = Number(call(fds, offsets, sizes, n, buffer));
      if (got !== expected) throw new Error(`the C pread floor read ${got < 0 ? `nothing of fd ${fds[-1 - got]}` : `${got} bytes of ${expected}`}: the fleet's fds changed under the bench`);
    },
  };
}
