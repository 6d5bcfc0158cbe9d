import type { ModelFormatModule } from '../model.js';
import { BadModelError } from '../../errors.js';
import { onnxMeta } from './meta.js';
import { openOnnx } from './reader.js';
import { rebuildOnnx } from './rebuild.js';

/** ONNX on Node: a ModelProto starts with ir_version (field 1, varint); read whole (protobuf bounds it to 2 GB). */
export const onnxFormat: ModelFormatModule = {
  ...onnxMeta,
  sniff: (head) => head.length >= 2 && head[0] === 0x08,
  open: (file, bytes) => openOnnx(file, bytes),
  rebuild: (skeleton, tensors, file) =>
    rebuildOnnx(
      skeleton,
      tensors.map(({ storage, dtype, ...data }) => {
        if (storage.format !== 'onnx')
          throw new BadModelError(`a ${storage.format} tensor cannot go into an ONNX model`, { file });
        return { path: storage.path, form: storage.form, dtype, ...data };
      }),
      file,
    ),
};
