import type { DType } from './dtype.js';
import type { Derived, Tensor } from './tensor.js';
import { keep } from './scope.js';
import { formatShape, shapesEqual } from './shape.js';

/**
 * Hands a gradient formula the gradient gathered so far for its input `index`, if there is one of `dtype`
 * (the type the formula's kernel can add); else undefined, and the engine sums it as usual. A formula that
 * takes it owns it: the gradient it returns for that input must include it (a GPU adds it in the kernel
 * that writes the formula's own part, which saves a pass over the gradient).
 */
export type TakePendingGradient = (index: number, dtype: DType) => Tensor | undefined;

/** How a tensor was computed: its inputs and the gradient formula that maps dOutput to dInputs. */
export interface GradNode {
  readonly name: string;
  readonly inputs: readonly Tensor[];
  readonly backward: (grad: Tensor, takePending: TakePendingGradient) => readonly (Tensor | null)[];
  /**
   * The values derived from its gradient that the formula uses, with their widths (Tensor.attachDerived):
   * it takes them from the gradient where the kernel that wrote the gradient attached them.
   */
  readonly derived?: Partial<Record<Derived, number>>;
}

let gradEnabled = true;

// the gradients backward() starts from when given none: ones, known to be ones without reading them
const unitSeeds = new WeakSet<Tensor>();

/**
 * Whether `g` is the ones that `backward()` without a gradient starts from: a formula that prepared its
 * gradient for a unit seed in the forward pass (crossEntropy's gradientInForward) can hand it on as it is.
 */
export function isUnitSeed(g: Tensor): boolean {
  return unitSeeds.has(g);
}

export function isGradEnabled(): boolean {
  return gradEnabled;
}

/** Runs `fn` without recording operations for autograd (inference, optimizer steps, gradient formulas). */
export function noGrad<T>(fn: () => T): T {
  const previous = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = previous;
  }
}

/**
 * Attaches a gradient formula to `output` when grad mode is on and any input needs gradients; `derived`
 * as GradNode has it.
 */
export function record(
  name: string, output: Tensor, inputs: readonly Tensor[], backward: GradNode['backward'], derived?: GradNode['derived'],
): Tensor {
  if (gradEnabled && inputs.some((t) => t.requiresGrad)) {
    output.requiresGrad = true;
    output.gradNode = { name, inputs, backward, ...(derived ? { derived } : {}) };
  }
  return output;
}

/**
 * The width of the `kind` that the formula receiving t's gradient would take from it (GradNode.derived),
 * seen through reshapes (which hand the gradient's storage on as it is); 0 if none. A formula writing t's
 * gradient attaches them where its kernel can make them in the same pass.
 */
export function derivedWanted(t: Tensor, kind: Derived): number {
  let node = t.gradNode;
  while (node?.name === 'reshape') node = node.inputs[0]?.gradNode ?? null;
  return node?.derived?.[kind] ?? 0;
}

/** Tensors reachable from `root` through grad nodes, inputs before the tensors computed from them. */
function topologicalOrder(root: Tensor): Tensor[] {
  const order: Tensor[] = [];
  const seen = new Set<Tensor>([root]);
  const stack: { tensor: Tensor; next: number }[] = [{ tensor: root, next: 0 }];
  while (stack.length > 0) {
    const top = stack[stack.length - 1]!;
    const inputs = top.tensor.gradNode?.inputs ?? [];
    if (top.next < inputs.length) {
      const input = inputs[top.next++]!;
      if (input.requiresGrad && !seen.has(input)) {
        seen.add(input);
        stack.push({ tensor: input, next: 0 });
      }
    } else {
      order.push(top.tensor);
      stack.pop();
    }
  }
  return order;
}

const notLoaded = (): never => {
  throw new Error('internal: autograd used before the elementwise ops were loaded');
};
let addTensors: (a: Tensor, b: Tensor) => Tensor = notLoaded;
let onesLike: (t: Tensor) => Tensor = notLoaded;

/** Supplied by the ops module (the core ops depend on this module, not the other way round). */
export function setAutogradHelpers(helpers: { add: (a: Tensor, b: Tensor) => Tensor; onesLike: (t: Tensor) => Tensor }): void {
  addTensors = helpers.add;
  onesLike = helpers.onesLike;
}

export function runBackward(root: Tensor, seed: Tensor | undefined, retainGraph: boolean): void {
  if (!root.requiresGrad) throw new Error('backward: the tensor does not require gradients (no input had requiresGrad)');
  if (!seed && root.size !== 1) {
    throw new Error(`backward: a gradient is needed for a non-scalar tensor of shape ${formatShape(root.shape)}`);
  }
  if (seed && !shapesEqual(seed.shape, root.shape)) {
    throw new Error(`backward: gradient shape ${formatShape(seed.shape)} does not match ${formatShape(root.shape)}`);
  }
  noGrad(() => {
    const order = topologicalOrder(root);
    // every slot holds its own Tensor object (views where formulas return a shared one), so each can be disposed once
    const grads = new Map<Tensor, Tensor>();
    const start = seed ? seed.shareStorage(seed.shape) : onesLike(root);
    if (!seed) unitSeeds.add(start);
    grads.set(root, start);
    const accumulate = (target: Tensor, g: Tensor): void => {
      const existing = grads.get(target);
      if (!existing) {
        grads.set(target, g);
        return;
      }
      grads.set(target, addTensors(existing, g));
      existing.dispose();
      g.dispose();
    };
    for (let i = order.length - 1; i >= 0; i--) {
      const t = order[i]!;
      const g = grads.get(t);
      if (!g) continue;
      grads.delete(t);
      const node = t.gradNode;
      if (!node) {
        // a leaf: accumulate into .grad, which outlives any scope
        if (t.grad) {
          const sum = addTensors(t.grad, g);
          t.grad.dispose();
          g.dispose();
          t.grad = keep(sum);
        } else {
          t.grad = keep(g);
        }
        continue;
      }
      const taken = new Set<number>();
      const takePending: TakePendingGradient = (j, dtype) => {
        const input = node.inputs[j];
        const pending = input?.requiresGrad ? grads.get(input) : undefined;
        if (!pending || pending.dtype !== dtype) return undefined;
        grads.delete(input!);
        taken.add(j);
        return pending;
      };
      const inputGrads = node.backward(g, takePending);
      for (const j of taken) {
        if (!inputGrads[j]) throw new Error(`internal: ${node.name} took the pending gradient of input ${j} and returned none`);
      }
      const handed = new Set<Tensor>();
      node.inputs.forEach((input, j) => {
        let ig = inputGrads[j];
        if (!ig) return;
        if (!input.requiresGrad) {
          if (ig !== g && !inputGrads.slice(0, j).includes(ig)) ig.dispose();
          return;
        }
        if (!shapesEqual(ig.shape, input.shape)) {
          throw new Error(`internal: ${node.name} gave a gradient of shape ${formatShape(ig.shape)} for an input of ${formatShape(input.shape)}`);
        }
        if (ig === g || handed.has(ig)) ig = ig.shareStorage(ig.shape);
        handed.add(ig);
        accumulate(input, ig);
      });
      if (!handed.has(g)) g.dispose();
      if (!retainGraph) t.gradNode = null;
    }
  });
}
