import type { Shape } from '../../tensor/shape.js';

/**
 * Calls `visitRow` for every run of the last axis of `shape` (a "row") in row-major order, with the row's
 * first output index, its length, and each operand's offset there and stride along it, where operand j's
 * strides (0 where broadcast) are `strides[j]`. Walking the last axis in an inner loop keeps the common
 * cases cheap. `rowStart` and `rowEnd` restrict the walk to rows [rowStart, rowEnd), so that threads can
 * share one walk.
 */
export function walkStrided(
  shape: Shape, strides: readonly (readonly number[])[],
  visitRow: (outStart: number, rowLength: number, starts: Int32Array | number[], innerStrides: number[]) => void,
  rowStart = 0, rowEnd = Infinity,
): void {
  const rank = shape.length;
  const operands = strides.length;
  if (rank === 0) {
    if (rowStart <= 0 && rowEnd > 0) visitRow(0, 1, new Array<number>(operands).fill(0), new Array<number>(operands).fill(0));
    return;
  }
  const inner = shape[rank - 1]!;
  const innerStrides = strides.map((s) => s[rank - 1]!);
  let outer = 1;
  for (let i = 0; i < rank - 1; i++) outer *= shape[i]!;
  if (outer === 0 || inner === 0) return;
  const last = Math.min(outer, rowEnd);
  // the multi-index of the first row over the outer axes, and each operand's offset there
  const counter = new Array<number>(rank - 1).fill(0);
  const starts = new Array<number>(operands).fill(0);
  let rest = rowStart;
  for (let axis = rank - 2; axis >= 0 && rest > 0; axis--) {
    counter[axis] = rest % shape[axis]!;
    rest = Math.floor(rest / shape[axis]!);
    for (let j = 0; j < operands; j++) starts[j]! += counter[axis]! * strides[j]![axis]!;
  }
  for (let row = rowStart; row < last; row++) {
    visitRow(row * inner, inner, starts, innerStrides);
    // advance the multi-index over the outer axes, updating each operand's start offset
    for (let axis = rank - 2; axis >= 0; axis--) {
      counter[axis]!++;
      for (let j = 0; j < operands; j++) starts[j]! += strides[j]![axis]!;
      if (counter[axis]! < shape[axis]!) break;
      for (let j = 0; j < operands; j++) starts[j]! -= strides[j]![axis]! * shape[axis]!;
      counter[axis] = 0;
    }
  }
}

/** Rows (runs of the last axis) of `shape`, the unit of work of walkStrided. */
export function rowCount(shape: Shape): number {
  let outer = 1;
  for (let i = 0; i < shape.length - 1; i++) outer *= shape[i]!;
  return shape.length === 0 ? 1 : outer;
}
