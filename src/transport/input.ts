import { GraphQLError } from 'graphql';
import type { Plugin } from 'graphql-yoga';

/** Deepest structure scanned; deeper inputs are refused elsewhere (or by JSON limits). */
const MAX_SCAN_DEPTH = 64;

/**
 * Whether a string anywhere in `value` contains U+0000. Postgres text and jsonb cannot store
 * it, so such input would fail deep inside a write; it is refused up front instead.
 */
export function containsNul(value: unknown, depth = 0): boolean {
  if (typeof value === 'string') return value.includes('\u0000');
  if (value === null || typeof value !== 'object' || depth > MAX_SCAN_DEPTH) return false;
  if (Array.isArray(value)) return value.some((item) => containsNul(item, depth + 1));
  return Object.entries(value).some(
    ([key, item]) => key.includes('\u0000') || containsNul(item, depth + 1),
  );
}

/** The error for a request whose query or variables contain U+0000 (also as `\u0000`). */
export function nulError(params: { query?: unknown; variables?: unknown }): GraphQLError | null {
  const query = typeof params.query === 'string' ? params.query : '';
  if (!containsNul(params.variables) && !query.includes('\u0000') && !/\\u0000/i.test(query)) {
    return null;
  }
  return new GraphQLError('Strings must not contain the character U+0000', {
    extensions: { code: 'BAD_USER_INPUT' },
  });
}

/** Refuses HTTP GraphQL requests carrying U+0000 (graphql-ws and SSE call `nulError`). */
export function useRejectNul(): Plugin {
  return {
    onParams({ params, setResult }) {
      const error = nulError(params);
      if (error) setResult({ errors: [error] });
    },
  };
}
