/**
 * `--json` output: one object on stdout. A command that printed its result and then fails (`eval --require`)
 * does not print an error object after it (two objects would not parse as one).
 */

let printed = false;

/** Prints a command's JSON result (one line or block) on stdout. */
export function printJson(text: string): void {
  printed = true;
  console.log(text);
}

/** Whether a JSON result was printed in this process. */
export function jsonPrinted(): boolean {
  return printed;
}

/** `Infinity` as the string the other `--json` outputs give (JSON has no such number). */
export const jsonReplacer = (_k: string, v: unknown): unknown => (v === Infinity ? 'Infinity' : v);
