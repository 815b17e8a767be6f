/**
 * A process for the launcher tests: `rendezvous` joins and prints what it got; `ids` joins with three
 * 16-byte ids made on rank 0 and prints them; `absent` has rank 1 skip the rendezvous and wait forever
 * while the others join.
 */
import { randomBytes } from 'node:crypto';
import { rendezvous, rendezvousIds } from '../src/distributed/rendezvous.js';

const mode = process.argv[2];
if (mode === 'ids') {
  const r = await rendezvousIds(process.env, 3, () => new Uint8Array(randomBytes(16)));
  process.stdout.write(`${JSON.stringify({ rank: r.rank, ids: [0, 1, 2].map((i) => Buffer.from(r.id(i)).toString('hex')) })}
`);
} else if (mode === 'absent' && process.env['RANK'] === '1') {
  setInterval(() => {}, 1000);
} else {
  const r = await rendezvous();
  process.stdout.write(`${JSON.stringify({ rank: r.rank, size: r.size, localRank: r.localRank, id: Buffer.from(r.sharedId).toString('hex') })}\n`);
  if (mode === 'absent') setInterval(() => {}, 1000);
}
