/**
 * The README's table of error codes, from the one table in src/errors.ts (`ERROR_CODES`): code, meaning,
 * exit status. `npx tsx scripts/error-table.ts` prints it; `--write` puts it between the README's
 * `<!-- errors:start -->` and `<!-- errors:end -->` markers. test/errors.test.ts checks that the README's
 * block is current and triggers every row through the CLI.
 */

import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ERROR_CODES } from '../src/errors.js';

export const START = '<!-- errors:start -->';
export const END = '<!-- errors:end -->';

/** The markdown table, rows in the table's order. */
export function errorTable(): string {
  const rows = Object.entries(ERROR_CODES).map(([code, { meaning, exit }]) => [
    `\`${code}\``,
    meaning,
    code === 'E_INTERRUPTED' ? `${exit} (143 after SIGTERM, 129 after SIGHUP)` : String(exit),
  ]);
  const header = ['code', 'meaning', 'exit status'];
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c].length)));
  const line = (r: string[]): string => `| ${r.map((x, c) => x.padEnd(widths[c])).join(' | ')} |`;
  return [line(header), `| ${widths.map((w) => '-'.repeat(w)).join(' | ')} |`, ...rows.map(line)].join('\n');
}

/** The README with its block replaced by the current table. */
export function withErrorTable(readme: string): string {
  const a = readme.indexOf(START);
  const b = readme.indexOf(END);
  if (a < 0 || b < a) throw new Error(`README has no ${START} … ${END} block`);
  return `${readme.slice(0, a + START.length)}\n\n${errorTable()}\n\n${readme.slice(b)}`;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  if (process.argv.includes('--write')) {
    const file = join(import.meta.dirname, '..', 'README.md');
    writeFileSync(file, withErrorTable(readFileSync(file, 'utf8')));
    console.log(`wrote the error table into ${file}`);
  } else console.log(errorTable());
}
