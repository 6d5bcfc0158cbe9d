/**
 * The progress bar on a terminal (none when stderr is piped). One bar at a time; whatever else the CLI writes
 * to stderr while it runs (an allocator's log line, an error, the interrupt message) first clears the bar's
 * line, so no message lands on it, and stopping restores the cursor the bar hid.
 */

import cliProgress from 'cli-progress';

type OnProgress = (p: { done: number; total: number; tensor: string }) => void;

let active: cliProgress.SingleBar | undefined;

/** A progress callback and its stop (idempotent; also called by `clearProgress`). */
export function progress(enabled: boolean): { onProgress?: OnProgress; stop: () => void } {
  // a terminal that cannot move the cursor (TERM=dumb: Emacs' shell, some CI logs) gets no bar, as a pipe does
  if (!enabled || !process.stderr.isTTY || process.env.TERM === 'dumb') return { stop: () => {} };
  const bar = new cliProgress.SingleBar(
    {
      format: '{bar} {value}/{total} tensors or slices  {tensor}',
      stream: process.stderr,
      clearOnComplete: true,
      hideCursor: true,
    },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  const stop = (): void => {
    if (!started) return;
    started = false;
    bar.stop();
    if (active === bar) active = undefined;
  };
  return {
    onProgress: ({ done, total, tensor }) => {
      if (!started) {
        bar.start(total, 0, { tensor: '' });
        started = true;
        active = bar;
      }
      bar.update(done, { tensor: tensor.slice(0, 40) });
    },
    stop,
  };
}

/** Stops the running bar, if any: its line is cleared and the cursor shown again. */
export function clearProgress(): void {
  const bar = active;
  active = undefined;
  if (!bar) return;
  bar.stop();
  // a bar stopped mid-way leaves its last frame: clear the line so the next message starts on a clean one
  if (process.stderr.isTTY) process.stderr.write('\r\x1b[2K');
}

/** A line on stderr that does not land on the bar: the bar's line is cleared first and redrawn on its next update. */
export function logLine(message: string): void {
  if (active && process.stderr.isTTY) process.stderr.write('\r\x1b[2K');
  process.stderr.write(`${message}\n`);
}
