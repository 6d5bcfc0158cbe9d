/**
 * What `--help` shows of the compress options beyond their flags: each option's default, taken from the
 * options resolved with nothing given (so the help cannot drift from what compress does), and the options in
 * groups a reader can scan.
 */

import { Help, type Option } from 'commander';
import { ERROR_CODES } from '../errors.js';
import { DEFAULT_CODEC, RATE_CONTROL_CODEC, resolveOptions, type OptionSpec } from '../pipeline/options.js';

/** Help groups of the table's options by key; an option not named here (a new one) goes under the last. */
const GROUPS: ReadonlyArray<[heading: string, keys: readonly string[]]> = [
  ['Codec and medium:', ['media', 'codec', 'bits', 'quality', 'lossless', 'effort', 'block', 'gop']],
  ['Quantization:', ['range', 'stride', 'clip', 'relStep', 'quantizer', 'outliers', 'rotate', 'nonFinite']],
  ['Rate control:', ['targetSnr', 'targetBpw', 'maxLoss', 'sensitivityWeight', 'probeSamples', 'reprobe', 'halfKept']],
  ['Performance:', ['jobs', 'sliceWeights']],
];
export const OTHER_GROUP = 'More compress options:';

export function helpGroupOf(key: string): string {
  return GROUPS.find(([, keys]) => keys.includes(key))?.[0] ?? OTHER_GROUP;
}

/**
 * Defaults the resolution leaves to someone else: the codec's own scale, or a setting whose absence means
 * "off" in words clearer than `undefined`.
 */
const DEFERRED: Readonly<Record<string, string>> = {
  quality: "the codec's; see nnmedia codecs",
  effort: "the codec's; see nnmedia codecs",
  lossless: "the codec's; see nnmedia codecs",
  gop: 'intra',
  relStep: 'none: ranges from min/max',
};

/** The default of a table option as the help shows it; undefined when there is none worth saying ("off"). */
export function defaultText(spec: OptionSpec, helpText: string): string | undefined {
  if (/\bdefault\b/.test(helpText)) return undefined; // the help text says it already
  if (spec.key === 'codec')
    return `${Object.entries(DEFAULT_CODEC)
      .map(([media, codec]) => `${codec} for ${media}`)
      .join(', ')}; ${RATE_CONTROL_CODEC} with rate control`;
  if (DEFERRED[spec.key]) return DEFERRED[spec.key];
  const resolved = resolveOptions({});
  const value =
    (resolved.base as unknown as Record<string, unknown>)[spec.key] ?? (resolved as unknown as Record<string, unknown>)[spec.key];
  if (value === undefined || typeof value === 'boolean' || typeof value === 'function') return undefined;
  return String(value);
}

const defaults = new WeakMap<Option, string>();

/** Records the default the help shows for this option (none: nothing shown). */
export function showDefault(option: Option, text: string | undefined): Option {
  if (text !== undefined) defaults.set(option, text);
  return option;
}

/** commander's help with the recorded defaults inside its "(choices: …)" parenthesis, or in one of their own. */
export const helpConfiguration: Partial<Help> = {
  optionDescription(option: Option): string {
    const base = Help.prototype.optionDescription.call(this, option);
    const text = defaults.get(option);
    if (text === undefined) return base;
    return base.endsWith(')') && base.includes('(choices:')
      ? `${base.slice(0, -1)}, default: ${text})`
      : `${base} (default: ${text})`;
  },
};

/** The end of `nnmedia --help`: a few commands to start from, and what the exit statuses mean. */
export function helpEpilogue(): string {
  const byStatus = new Map<number, string[]>();
  for (const [code, { exit }] of Object.entries(ERROR_CODES)) byStatus.set(exit, [...(byStatus.get(exit) ?? []), code]);
  const statuses = [...byStatus]
    .sort((a, b) => a[0] - b[0])
    .map(
      ([exit, codes]) =>
        `  ${String(exit).padStart(3)}  ${codes.join(', ')}${codes.includes('E_INTERRUPTED') ? ' (Ctrl-C; 143 after SIGTERM, 129 after SIGHUP)' : ''}`,
    );
  return [
    '',
    'Examples:',
    '  nnmedia compress model.onnx -o model.nnm',
    '  nnmedia inspect model.nnm',
    '  nnmedia decompress model.nnm -o restored.onnx',
    '  nnmedia eval model.nnm -m model.onnx',
    '',
    'Exit status 0 on success; a failure prints one line "nnmedia: E_CODE: file …, tensor …: what is wrong"',
    'and exits with:',
    ...statuses,
  ].join('\n');
}
