/**
 * Text from a file (tensor names, manifest strings, paths) made safe for a terminal: control characters, which
 * could move the cursor or retitle the window, are shown as `\x1b`-style escapes; a tab becomes a space.
 */
export function printable(s: string): string {
  return s.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) =>
    c === '\t' ? ' ' : `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`,
  );
}

/** Plain-text table: left-aligned text, right-aligned numbers; cells shown `printable`. */
export function formatTable(header: string[], rows: string[][], opts: { header?: boolean } = {}): string {
  const all = (opts.header === false ? rows : [header, ...rows]).map((r) => r.map((cell) => printable(cell)));
  const widths = header.map((_, c) => Math.max(...all.map((r) => [...(r[c] ?? '')].length)));
  const body = opts.header === false ? all : all.slice(1);
  const numeric = header.map((_, c) => body.length > 0 && body.every((r) => /^[-+]?[\d.,∞eE+-]*$/.test(r[c] ?? '')));
  const line = (r: string[]): string =>
    r
      .map((cell, c) => (numeric[c] ? cell.padStart(widths[c]) : cell.padEnd(widths[c])))
      .join('  ')
      .trimEnd();
  const out = all.map(line);
  if (opts.header !== false) out.splice(1, 0, widths.map((w) => '-'.repeat(w)).join('  '));
  return out.join('\n');
}
