import type { Viewer } from './viewer.ts';

/**
 * Viewers of verified tokens, keyed by the token text, least recently used evicted first.
 * An entry is served only before its token's `exp`; only tokens that verified are stored.
 */
export interface TokenCache {
  /** The viewer of `token` if it verified before and `now` is before its exp; else undefined. */
  get(token: string, now: number): Viewer | undefined;
  /** Remembers a verified token; tokens without exp, already expired or too long are skipped. */
  set(token: string, viewer: Viewer, now: number): void;
  readonly size: number;
}

/**
 * Tokens longer than this are verified every time, never stored: it bounds the cache's memory
 * to `maxEntries` x 2 KiB (real tokens are a few hundred bytes).
 */
export const MAX_CACHED_TOKEN_LENGTH = 2048;

/** A cache of at most `maxEntries` tokens; 0 disables it (every call misses). */
export function createTokenCache(maxEntries: number): TokenCache {
  // A Map iterates in insertion order: re-inserting on a hit keeps the oldest use first.
  const entries = new Map<string, Viewer>();
  return {
    get(token, now) {
      const viewer = entries.get(token);
      if (viewer === undefined) return undefined;
      if (viewer.expiresAt === null || now >= viewer.expiresAt) {
        entries.delete(token);
        return undefined;
      }
      entries.delete(token);
      entries.set(token, viewer);
      return viewer;
    },
    set(token, viewer, now) {
      if (maxEntries <= 0 || token.length > MAX_CACHED_TOKEN_LENGTH) return;
      if (viewer.expiresAt === null || now >= viewer.expiresAt) return;
      entries.delete(token);
      entries.set(token, viewer);
      while (entries.size > maxEntries) {
        const oldest = entries.keys().next().value;
        if (oldest === undefined) break;
        entries.delete(oldest);
      }
    },
    get size() {
      return entries.size;
    },
  };
}
