import type { ModelFormatModule } from '../model.js';
import { BadModelError } from '../../errors.js';
import { safetensorsMeta } from './meta.js';
import { SafetensorsReader, rebuildSafetensors } from './reader.js';

/** Largest header length the sniffer believes (the reader's own limit is checked when it opens the file). */
const SNIFF_MAX_HEADER = 100_000_000n;

/** safetensors on Node: a u64 header length, then the JSON header's '{'; read by offset. */
export const safetensorsFormat: ModelFormatModule = {
  ...safetensorsMeta,
  sniff: (head) =>
    head.length >= 9 &&
    head[8] === 0x7b &&
    new DataView(head.buffer, head.byteOffset, head.byteLength).getBigUint64(0, true) < SNIFF_MAX_HEADER,
  open: (file) => new SafetensorsReader(file),
  rebuild: (skeleton, tensors, file) =>
    rebuildSafetensors(
      skeleton,
      tensors.map(({ storage, dtype, ...data }) => {
        if (storage.format !== 'safetensors')
          throw new BadModelError(`a ${storage.format} tensor cannot go into a safetensors model`, { file });
        return { begin: storage.begin, end: storage.end, dtype, ...data };
      }),
      file,
    ),
};
