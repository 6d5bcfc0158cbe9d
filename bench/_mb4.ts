import { getCodec } from '../src/codecs/registry.js';
import { quantizePlanes } from '../src/quantize/tensor.js';
import { codeEntropyBits } from '../src/rate/entropy.js';
const rows = 4096, cols = 4096; const n = rows*cols;
const p = new Float32Array(n); let s = 7;
for (let i=0;i<n;i+=2){ const u1=1-Math.random(), u2=Math.random(); const r=Math.sqrt(-2*Math.log(u1))*0.02; p[i]=r*Math.cos(2*Math.PI*u2); p[i+1]=r*Math.sin(2*Math.PI*u2); }
for (const rel of [1/3, 1/8]) {
  const q = quantizePlanes([p],[{rows,cols,channelWidth:1,label:''}],{bits:8,clip:false,range:'channel',stride:1,relStep:rel})[0];
  const ent = codeEntropyBits(q.codes);
  console.log('relStep', rel.toFixed(3), 'entropy bytes', (ent/8).toFixed(0));
  const plane = { data: q.codes, width: cols, height: rows, bits: 8 } as any;
  for (const [name, effort] of [['png',6],['zstd',3],['zstd-sign',3],['zstd',19]] as const) {
    const t = Date.now(); const b = await getCodec(name,{} as any).encode(plane, { lossless: true, effort } as any);
    console.log(' ', name, effort, b.length, (b.length*8/ent).toFixed(3), 'x entropy', Date.now()-t, 'ms');
  }
}
