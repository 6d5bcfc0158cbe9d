/** Plain-text table: left-aligned text, right-aligned numbers. */
export function formatTable(header: string[], rows: string[][], opts: { header?: boolean } = {}): string {
  const all = opts.header === false ? rows : [header, ...rows];
  const widths = header.map((_, c) => Math.max(...all.map((r) => [...(r[c] ?? '')].length)));
  const numeric = header.map((_, c) => rows.length > 0 && rows.every((r) => /^[-+]?[\d.,∞eE+-]*$/.test(r[c] ?? '')));
  const line = (r: string[]): string =>
    r
      .map((cell, c) => (numeric[c] ? cell.padStart(widths[c]) : cell.padEnd(widths[c])))
      .join('  ')
      .trimEnd();
  const out = all.map(line);
  if (opts.header !== false) out.splice(1, 0, widths.map((w) => '-'.repeat(w)).join('  '));
  return out.join('\n');
}
