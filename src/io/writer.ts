/**
 * Sequential writes off the caller's thread: each buffer is written at the next offset by libuv's thread
 * pool while the caller goes on decoding (a synchronous write of a 100 MB tensor would hold the thread the
 * decoder runs on at `--jobs 1`, and the one that hands out work otherwise). Writes run one at a time, in
 * order; `write` waits only when more than `maxPending` bytes are queued before the newest buffer, so memory
 * holds at most that and one buffer.
 */

import { write as fsWrite } from 'node:fs';

/** One buffer written whole at `position` (a write may take less than asked: the rest follows). */
function writeFully(fd: number, bytes: Uint8Array, position: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const step = (done: number): void => {
      if (done >= bytes.length) return resolve();
      fsWrite(fd, bytes, done, bytes.length - done, position + done, (e, n) => (e ? reject(e) : step(done + n)));
    };
    step(0);
  });
}

export class QueuedWriter {
  private readonly queue: Array<{ done: Promise<void>; bytes: number }> = [];
  private tail: Promise<void> = Promise.resolve();
  private pending = 0;
  private position: number;

  /** Writes start at `position` of the descriptor (0 for a new file). */
  constructor(
    private readonly fd: number,
    private readonly maxPending = 64 << 20,
    position = 0,
  ) {
    this.position = position;
  }

  /** Bytes written or queued so far. */
  get bytes(): number {
    return this.position;
  }

  /**
   * Queues `bytes` (kept, not copied: the caller must not change them) and returns once no more than
   * `maxPending` bytes of earlier writes wait; a write's failure is thrown here or by `flush`. `onWritten`
   * is called once the bytes are in the file (the buffer is free again).
   */
  async write(bytes: Uint8Array, onWritten?: () => void): Promise<void> {
    if (bytes.length === 0) return;
    const at = this.position;
    this.position += bytes.length;
    this.pending += bytes.length;
    const done = this.tail.then(() => writeFully(this.fd, bytes, at)).then(onWritten);
    // the chain carries the first failure to every later write and to flush; observed there, not here
    done.catch(() => {});
    this.tail = done;
    this.queue.push({ done, bytes: bytes.length });
    // the newest write always goes on in the background; the caller waits for older ones beyond the bound
    while (this.queue.length > 1 && this.pending - bytes.length > this.maxPending) {
      const oldest = this.queue.shift()!;
      await oldest.done;
      this.pending -= oldest.bytes;
    }
  }

  /** Waits for every queued write. */
  async flush(): Promise<void> {
    await this.tail;
    this.queue.length = 0;
    this.pending = 0;
  }
}
