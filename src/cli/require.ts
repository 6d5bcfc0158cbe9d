/**
 * `eval --require`: bounds on what eval measured (a task metric by its key, or the archive's bits/weight), so a
 * script or CI job fails on a model that came back worse than it accepts: eval alone exits 0 however bad the
 * result.
 */

import { InvalidArgumentError } from 'commander';
import { OptionError, QualityError } from '../errors.js';
import type { EvaluationReport } from '../report/evaluate.js';

export interface Requirement {
  key: string;
  op: '>=' | '<=' | '>' | '<';
  value: number;
}

export interface RequirementResult extends Requirement {
  actual: number;
  passed: boolean;
}

/** `agreement>=0.99`, `bitsPerWeight<4`: a key, a comparison and a finite number. */
export function parseRequirement(text: string, previous: Requirement[] = []): Requirement[] {
  const m = /^\s*([A-Za-z][\w.]*)\s*(>=|<=|>|<)\s*(\S+)\s*$/.exec(text);
  const value = m ? Number(m[3]) : NaN;
  if (!m || !Number.isFinite(value))
    throw new InvalidArgumentError(
      `expected KEY>=N, KEY<=N, KEY>N or KEY<N (e.g. 'agreement>=0.99', 'bitsPerWeight<4') but received ${JSON.stringify(text)}${/[<>]/.test(text) ? '' : ' (quote the bound: a shell reads > and < as redirections)'}`,
    );
  return [...previous, { key: m[1], op: m[2] as Requirement['op'], value }];
}

/** The values a requirement may name: the task's metrics by key, and the archive's bits/weight and ratio. */
function measuredValues(report: EvaluationReport): Map<string, number> {
  const values = new Map<string, number>();
  for (const m of report.task?.metrics ?? []) values.set(m.key, m.value);
  // the archive's own, whatever a task names its metrics
  values.set('bitsPerWeight', report.bitsPerWeight);
  values.set('ratio', report.ratio);
  return values;
}

/** Each requirement against the report; a key it does not hold is an option error naming the keys it holds. */
export function checkRequirements(report: EvaluationReport, requirements: readonly Requirement[]): RequirementResult[] {
  const values = measuredValues(report);
  return requirements.map((r) => {
    const actual = values.get(r.key);
    if (actual === undefined)
      throw new OptionError(
        `--require ${r.key}: eval measured no such value${report.task ? ` (task ${report.task.name})` : ''}; it measured ${[...values.keys()].join(', ')}`,
      );
    return { ...r, actual, passed: holds(actual, r) };
  });
}

function holds(v: number, r: Requirement): boolean {
  return r.op === '>=' ? v >= r.value : r.op === '<=' ? v <= r.value : r.op === '>' ? v > r.value : v < r.value;
}

/** One line per requirement: what was asked, what was measured, whether it holds. */
export function requirementLines(results: readonly RequirementResult[]): string[] {
  return results.map((r) => `require ${r.key} ${r.op} ${r.value}: ${formatValue(r)} ${r.passed ? 'ok' : 'FAILED'}`);
}

/** A quality error for the requirements that failed (exit 7), or undefined when all hold. */
export function requirementFailure(results: readonly RequirementResult[], archive: string): QualityError | undefined {
  const failed = results.filter((r) => !r.passed);
  if (!failed.length) return undefined;
  return new QualityError(
    `eval: ${failed.map((r) => `${r.key} ${formatValue(r)} is not ${r.op} ${r.value}`).join('; ')} (--require)`,
    { file: archive },
  );
}

/**
 * The measured value in as few significant digits (6 at least) as keep it on its side of the bound: 0.98999999
 * against 0.99 is not printed as 0.99 beside FAILED.
 */
function formatValue(r: RequirementResult): string {
  for (let digits = 6; digits < 17; digits++) {
    const shown = Number(r.actual.toPrecision(digits));
    if (holds(shown, r) === r.passed) return String(shown);
  }
  return String(r.actual);
}
