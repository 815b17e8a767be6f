import { flashForward } from './src/backend/cpu/attention-forward.js';
import { flashForwardOld } from './src/backend/cpu/attention-old-tmp.js';
const m = Number(process.argv[2] ?? 256), D = 32, causal = process.argv[3] !== 'full';
const mk = () => { const a = new Float64Array(m*D); for (let i=0;i<a.length;i++) a[i]=Math.random()*2-1; return a; };
const q = mk(), k = mk(), v = mk(); const o1 = new Float64Array(m*D), o2 = new Float64Array(m*D), l1 = new Float64Array(m), l2 = new Float64Array(m);
const flops = 2*m*m*D*(causal?1:2); const reps = Math.max(1, Math.round(2e8/flops));
const best = { new: Infinity, old: Infinity };
for (let round = 0; round < 8; round++) {
  let t = performance.now(); for (let r = 0; r < reps; r++) flashForward(q,k,v,m,D,causal,o1,l1); best.new = Math.min(best.new, performance.now()-t);
  t = performance.now(); for (let r = 0; r < reps; r++) flashForwardOld(q,k,v,m,D,causal,o2,l2); best.old = Math.min(best.old, performance.now()-t);
}
let md = 0; for (let i=0;i<o1.length;i++) md = Math.max(md, Math.abs(o1[i]!-o2[i]!));
console.log(`m=${m} causal=${causal} new ${(flops*reps/best.new/1e6).toFixed(2)} GF/s  old ${(flops*reps/best.old/1e6).toFixed(2)} GF/s  diff ${md}`);
