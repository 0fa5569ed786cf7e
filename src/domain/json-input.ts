import { badInput } from '../errors.ts';
import type { LimitReporter } from './limits.ts';

/** A lone UTF-16 surrogate: with the `u` flag a well-formed pair is one code point, not `Cs`. */
const LONE_SURROGATE = /\p{Cs}/u;

/** Why a string cannot be stored or sent as it is; null when it can. */
export function stringProblem(value: string): string | null {
  if (value.includes('\u0000')) return 'must not contain the character U+0000';
  if (LONE_SURROGATE.test(value)) return 'must be well-formed Unicode (no lone surrogates)';
  return null;
}

/**
 * Refuses (BAD_USER_INPUT) a JSON value from a client that nests deeper than `maxDepth` levels
 * (JSON_MAX_DEPTH; serializing or storing it would exhaust the stack) or holds, at any depth, a
 * string or key with U+0000 or a lone surrogate (Postgres jsonb cannot store either). Walks
 * iteratively, so any depth is checked without recursion. `what` names the field in the message;
 * `onLimit` is told about depth refusals.
 */
export function checkJsonInput(
  value: unknown,
  what: string,
  maxDepth: number,
  onLimit?: LimitReporter,
): void {
  const stack: [unknown, number][] = [[value, 0]];
  while (stack.length > 0) {
    const [item, depth] = stack.pop() as [unknown, number];
    if (typeof item === 'string') {
      const problem = stringProblem(item);
      if (problem) throw badInput(`${what}: strings ${problem}`);
      continue;
    }
    if (item === null || typeof item !== 'object') continue;
    if (depth >= maxDepth) {
      onLimit?.('jsonDepth', { depth: depth + 1 });
      throw badInput(`${what} nests deeper than ${maxDepth} levels`);
    }
    if (Array.isArray(item)) {
      for (const child of item) stack.push([child, depth + 1]);
      continue;
    }
    for (const [key, child] of Object.entries(item)) {
      const problem = stringProblem(key);
      if (problem) throw badInput(`${what}: keys ${problem}`);
      stack.push([child, depth + 1]);
    }
  }
}
