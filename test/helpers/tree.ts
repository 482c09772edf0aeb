/** Every file under a folder, by its path relative to the folder: for comparing generated trees. */
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

export function filesUnder(root: string, under = ''): Map<string, string> {
  const found = new Map<string, string>();
  for (const entry of readdirSync(join(root, under), { withFileTypes: true })) {
    const path = under ? `${under}/${entry.name}` : entry.name;
    if (entry.isDirectory()) for (const [p, text] of filesUnder(root, path)) found.set(p, text);
    else found.set(path, readFileSync(join(root, path), 'utf8'));
  }
  return found;
}
