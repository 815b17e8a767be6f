import { dilatedAttentionForward, dilatedAttentionBackward } from './src/backend/cpu/attention-kernel.js';
import { newTypedArray } from './src/tensor/dtype.js';
const N = Number(process.argv[2] ?? 16384), H = 4, D = 32;
const shared = process.argv[3] !== 'serial';
const geom = { batch: 1, seqLen: N, heads: H, headDim: D };
const patterns = [[256,1],[512,2],[1024,4],[2048,8]].map(([w,r]) => ({ segmentLength: w!, dilationRate: r! }));
const config = { patterns, causal: true, scale: 1/Math.sqrt(D), headOffsets: 'paper' as const };
const mk = () => { const a = newTypedArray('float32', N*H*D, shared) as Float32Array; for (let i=0;i<a.length;i++) a[i]=Math.random()*2-1; return a; };
const q = mk(), k = mk(), v = mk(), dO = mk();
let flops = 0; for (const p of patterns) { const wp = Math.min(p.segmentLength, N); flops += H*(N/wp)*2*(wp/p.dilationRate)**2*D; }
for (let it = 0; it < 4; it++) {
  let t = performance.now();
  const { o, lse } = dilatedAttentionForward(q, k, v, geom, config);
  const tf = performance.now() - t; t = performance.now();
  dilatedAttentionBackward(q, k, v, o, lse, dO, geom, config);
  const tb = performance.now() - t;
  console.log(`fwd ${tf.toFixed(1)} ms (${(flops/tf/1e6).toFixed(2)} GF/s)  bwd ${tb.toFixed(1)} ms (${(2.5*flops/tb/1e6).toFixed(2)} GF/s) ns/token fwd+bwd ${((tf+tb)*1e6/N).toFixed(0)}`);
}
