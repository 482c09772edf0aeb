/**
 * Text from outside (a stat's name in an image, a VMM's -name, a process's comm, a sender's
 * attribute) as a terminal may show it: every character that a terminal acts on rather than
 * prints (C0 and C1 controls, DEL, escape sequences' ESC and CSI) and every one that reorders or
 * hides what follows (Unicode's bidirectional controls, line and paragraph separators) is shown
 * as an escape (\x1b, \n, \u202e), so that a name cannot write into another user's terminal.
 * Applied where a command prints, to each line (or field) it prints.
 */

// eslint-disable-next-line no-control-regex
const UNSAFE = /[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;
const NAMED: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };

function escaped(character: string): string {
  const code = character.charCodeAt(0);
  return NAMED[character] ?? (code <= 0xff ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`);
}

/** `text` with every character a terminal would act on shown as an escape. */
export function terminalText(text: string): string {
  return text.replace(UNSAFE, escaped);
}

/** Lines joined by '\n' (the only control a caller means), each as terminalText shows it. */
export function terminalLines(text: string): string {
  return text.split('\n').map(terminalText).join('\n');
}
