import type { Shape } from '../../tensor/shape.js';

/**
 * Calls `visit(outIndex, offsets)` for every element of `shape` in row-major order, where offsets[j] is
 * the element's position in operand j whose strides (0 where broadcast) are `strides[j]`. The last axis is
 * walked in an inner loop so that the common cases stay cheap.
 */
export function walkStrided(
  shape: Shape, strides: readonly (readonly number[])[],
  visitRow: (outStart: number, rowLength: number, starts: Int32Array | number[], innerStrides: number[]) => void,
): void {
  const rank = shape.length;
  const operands = strides.length;
  if (rank === 0) {
    visitRow(0, 1, new Array<number>(operands).fill(0), new Array<number>(operands).fill(0));
    return;
  }
  const inner = shape[rank - 1]!;
  const innerStrides = strides.map((s) => s[rank - 1]!);
  let outer = 1;
  for (let i = 0; i < rank - 1; i++) outer *= shape[i]!;
  if (outer === 0 || inner === 0) return;
  const counter = new Array<number>(rank - 1).fill(0);
  const starts = new Array<number>(operands).fill(0);
  for (let row = 0; row < outer; row++) {
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
