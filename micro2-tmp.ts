import { scoreTile, accumulateRows, accumulateColumns } from './src/backend/cpu/attention-tiles.js';
const D = 32, B = 64;
const mk = (n: number) => { const a = new Float64Array(n); for (let i=0;i<a.length;i++) a[i]=Math.random()*2-1; return a; };
const A = mk(B*D), Bm = mk(B*D), S = mk(B*B), C = new Float64Array(B*D);
const flops = 2*B*B*D; const reps = 2000;
function time(name: string, f: () => void) { let best = Infinity; for (let r = 0; r < 6; r++) { const t = performance.now(); for (let i = 0; i < reps; i++) f(); best = Math.min(best, performance.now()-t); } console.log(name, (flops*reps/best/1e6).toFixed(2), 'GF/s'); }
time('score', () => scoreTile(A, Bm, D, 0, B, 0, B, false, 0, S, B));
time('accRows', () => accumulateRows(S, B, Bm, D, 0, B, 0, B, false, C));
time('accCols', () => accumulateColumns(S, B, A, D, 0, B, 0, B, false, C));
let x = 0; time('exp', () => { for (let i = 0; i < B*B; i++) S[i] = Math.exp(S[i]! - 1); });
