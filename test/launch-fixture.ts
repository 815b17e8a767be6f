/**
 * A process for the launcher tests: `rendezvous` joins and prints what it got; `absent` has rank 1 skip
 * the rendezvous and wait forever while the others join.
 */
import { rendezvous } from '../src/distributed/rendezvous.js';

const mode = process.argv[2];
if (mode === 'absent' && process.env['RANK'] === '1') {
  setInterval(() => {}, 1000);
} else {
  const r = await rendezvous();
  process.stdout.write(`${JSON.stringify({ rank: r.rank, size: r.size, localRank: r.localRank, id: Buffer.from(r.sharedId).toString('hex') })}\n`);
  if (mode === 'absent') setInterval(() => {}, 1000);
}
