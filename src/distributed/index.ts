/** Distributed execution: communicators, sequence-parallel attention, the launcher and its rendezvous. */
export {
  PeerFailedError, type Communicator, type CollectiveReduceOp, type RecvSpec, type SendSpec,
} from './communicator.js';
export { runRanks, type RunRanksOptions } from './in-process.js';
export { TrafficLog, type TrafficTotals } from './traffic.js';
export {
  sequenceParallelAttention, type SequenceParallelGrads, type SequenceParallelOptions, type SequenceParallelResult,
} from './sequence-parallel.js';
export { planSequenceParallel, sequenceStarts, type SequencePlan, type SequencePlanInput } from './sequence-plan.js';
export { joinSequence, splitSequence } from './split.js';
export { rendezvous, rendezvousTimeoutMs, type RendezvousOptions, type RendezvousResult } from './rendezvous.js';
export { launch, type LaunchOptions, type LaunchResult } from './launcher.js';
