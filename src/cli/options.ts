/** Option parsers shared by the commands: a bad value is a usage error (exit 2). */
import { InvalidArgumentError } from 'commander';

export function integerOption(min: number, max: number) {
  return (text: string): number => {
    const value = Number(text);
    if (!/^\d+$/.test(text) || value < min || value > max) {
      throw new InvalidArgumentError(`expected a whole number from ${min} to ${max}, got ${JSON.stringify(text)}`);
    }
    return value;
  };
}

/** For repeatable options: --pid 1 --pid 2. */
export function collect<T>(parse: (text: string) => T) {
  return (text: string, previous: T[] | undefined): T[] => [...(previous ?? []), parse(text)];
}

export const pidOption = integerOption(1, 2 ** 22);
