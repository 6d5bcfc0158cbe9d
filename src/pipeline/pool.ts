/** Runs `work` over items with at most `limit` in flight; the first failure rejects (others are awaited). */
export async function runPool<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failure: unknown;
  const worker = async (): Promise<void> => {
    while (next < items.length && failure === undefined) {
      const item = items[next++];
      try {
        await work(item);
      } catch (e) {
        failure ??= e;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  if (failure !== undefined) throw failure;
}

/**
 * Runs `work` over items with at most `limit` started and not yet committed,
 * and hands results to `commit` in item order: output order (and so the bytes
 * written) never depends on which job finishes first, and memory holds at most
 * `limit` results. On a failure nothing more starts; work in flight is awaited
 * before the first error is thrown, so nothing writes after the caller cleans up.
 */
export async function runOrdered<T, R>(
  items: readonly T[],
  limit: number,
  work: (item: T, index: number) => Promise<R>,
  commit: (result: R, item: T, index: number) => void | Promise<void>,
): Promise<void> {
  const window: Array<Promise<R>> = [];
  let committed = 0;
  try {
    for (let i = 0; i < items.length; i++) {
      const p = work(items[i], i);
      p.catch(() => {}); // observed below, in order
      window.push(p);
      if (window.length >= Math.max(1, limit)) {
        await commit(await window.shift()!, items[committed], committed);
        committed++;
      }
    }
    while (window.length) {
      await commit(await window.shift()!, items[committed], committed);
      committed++;
    }
  } finally {
    await Promise.allSettled(window);
  }
}
