/**
 * src/abi/ against the system's headers: every constant and struct layout of kvm.ts and
 * linux.ts is compiled with the C compiler against <linux/kvm.h> and libc's headers, so the
 * single definition can never drift from what the kernel ships.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import * as kvm from '../../src/abi/kvm.js';
import type { StructLayout } from '../../src/abi/layout.js';
import * as linux from '../../src/abi/linux.js';

const KVM_H = '/usr/include/linux/kvm.h';

/** Constants whose C spelling is an expression rather than a macro of the same name. */
const C_EXPRESSIONS: Record<string, string> = { USER_HZ: 'sysconf(_SC_CLK_TCK)', KVM_STATS_VALUE_SIZE: 'sizeof(__u64)', PTHREAD_ATTR_SIZE: 'sizeof(pthread_attr_t)' };

/** Kernel-internal constants no header has; each is checked by behaviour where it is used. */
const NOT_IN_HEADERS = new Set(['PF_EXITING', 'SCM_MAX_FD']);

const abi = { ...kvm, ...linux };
const constants = Object.entries(abi).filter((entry): entry is [string, number] => typeof entry[1] === 'number' && !NOT_IN_HEADERS.has(entry[0]));
const layouts = Object.values(abi).filter((value): value is StructLayout => typeof value === 'object' && value !== null && 'cName' in value);

function compileAndRun(): Map<string, string> {
  const dir = mkdtempSync(join(tmpdir(), 'kvm-abi-'));
  const lines = [
    '#define _GNU_SOURCE', // struct ucred
    '#include <stdio.h>',
    '#include <stddef.h>',
    '#include <unistd.h>',
    '#include <fcntl.h>',
    '#include <sys/mman.h>',
    '#include <sys/syscall.h>',
    '#include <linux/kvm.h>',
    '#include <linux/kcmp.h>',
    '#include <sys/socket.h>',
    '#include <sys/un.h>',
    '#include <sys/uio.h>',
    '#include <poll.h>',
    '#include <pthread.h>',
    '#include <sys/vfs.h>',
    '#include <linux/magic.h>',
    '#define FIELD_SIZE(type, member) sizeof(((type *)0)->member)',
    'int main(void) {',
    ...constants.map(([name]) => `  printf("%s %lld\\n", "${name}", (long long)(${C_EXPRESSIONS[name] ?? name}));`),
    ...layouts.flatMap((layout) => [
      `  printf("%s %zu\\n", "${layout.cName}", sizeof(${layout.cName}));`,
      ...layout.fields.map((field) =>
        field.size === 0
          ? `  printf("%s %zu 0\\n", "${layout.cName}.${field.name}", offsetof(${layout.cName}, ${field.name}));`
          : `  printf("%s %zu %zu\\n", "${layout.cName}.${field.name}", offsetof(${layout.cName}, ${field.name}), FIELD_SIZE(${layout.cName}, ${field.name}));`,
      ),
    ]),
    '  return 0;',
    '}',
  ];
  writeFileSync(join(dir, 'abi.c'), lines.join('\n'));
  execFileSync('cc', ['-o', join(dir, 'abi'), join(dir, 'abi.c')], { stdio: 'pipe' });
  const output = execFileSync(join(dir, 'abi'), { encoding: 'utf8' });
  return new Map(output.trim().split('\n').map((line) => [line.slice(0, line.lastIndexOf(' ', line.length)), line]));
}

describe('the kernel ABI module', () => {
  const header = readFileSync(KVM_H, 'utf8');
  const printed = compileAndRun();
  const lookup = (key: string): string[] => {
    for (const line of printed.values()) {
      if (line.startsWith(`${key} `)) return line.slice(key.length + 1).split(' ');
    }
    throw new Error(`${key} was not printed`);
  };

  it.each(constants)('%s matches the C headers', (name, value) => {
    expect(Number(lookup(name)[0])).toBe(value);
  });

  it.each(layouts.map((layout) => [layout.cName, layout] as const))('%s has the size and field offsets of the C headers', (_, layout) => {
    expect(Number(lookup(layout.cName)[0])).toBe(layout.size);
    for (const field of layout.fields) {
      const [offset, size] = lookup(`${layout.cName}.${field.name}`);
      expect({ field: field.name, offset: Number(offset), size: Number(size) }).toEqual({ field: field.name, offset: field.offset, size: field.size });
    }
  });

  it('lists the stats structs completely and in the header\'s field order', () => {
    for (const layout of [kvm.KVM_STATS_HEADER, kvm.KVM_STATS_DESC]) {
      const body = new RegExp(`${layout.cName.replace(' ', '\\s+')}\\s*\\{([^}]*)\\}`).exec(header)?.[1];
      expect(body, `${layout.cName} in ${KVM_H}`).toBeDefined();
      // Members are `type name;`, `type name[];` or __DECLARE_FLEX_ARRAY(type, name).
      const members = [...body!.matchAll(/(\w+)(?:\[\d*\])?\s*;|__DECLARE_FLEX_ARRAY\(\s*\w+\s*,\s*(\w+)\s*\)/g)].map((m) => m[1] ?? m[2]);
      expect(layout.complete).toBe(true);
      expect(layout.fields.map((f) => f.name)).toEqual(members);
      // Contiguous: each field starts where the previous one ends, and the last ends the struct.
      let end = 0;
      for (const field of layout.fields) {
        expect(field.offset).toBe(end);
        end += field.size;
      }
      expect(end).toBe(layout.size);
    }
  });

  it('defines every KVM_STATS_* macro of the header', () => {
    const macros = [...header.matchAll(/^#define\s+(KVM_STATS_\w+)/gm)].map((m) => m[1]!);
    expect(macros.length).toBeGreaterThan(20);
    const defined = new Set(constants.map(([name]) => name));
    expect(macros.filter((macro) => !defined.has(macro))).toEqual([]);
    for (const name of ['KVM_GET_STATS_FD', 'KVM_CAP_BINARY_STATS_FD']) expect(defined.has(name)).toBe(true);
  });

  it('checks both modules: the KVM one holds only KVM, the Linux one none of it', () => {
    const names = (module: object): string[] => Object.keys(module).filter((name) => name !== 'default');
    expect(names(linux).filter((name) => name.startsWith('KVM_') || name.startsWith('ANON_INODE_'))).toEqual([]);
    expect(names(kvm).filter((name) => !/^(KVM_|ANON_INODE_)/.test(name))).toEqual([]);
    for (const name of ['AF_UNIX', 'SCM_RIGHTS', 'POLLIN', 'USER_HZ', 'PF_EXITING', 'O_RDONLY']) expect(names(linux)).toContain(name);
  });

  it('keeps every constant of the KVM ABI in that one module', () => {
    // No other file in src/ spells an ioctl number or a stats flag.
    const grep = spawnSync('grep', ['-rnE', '0x[0-9a-fA-F]*ae[0-9a-fA-F]{2}\\b|KVM_STATS_(TYPE|UNIT|BASE)_[A-Z]+ *=|anon_inode:', 'src', '--exclude=kvm.ts'], {
      encoding: 'utf8',
      cwd: join(import.meta.dirname, '..', '..'),
    });
    expect(grep.status, grep.stderr).toBe(1); // 1: no line matched
    expect(grep.stdout).toBe('');
  });
});
