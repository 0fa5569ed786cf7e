import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';

/**
 * One replaced service's old endpoints, mounted under a prefix. A shim parses the old request,
 * calls the same domain function the GraphQL resolver calls and formats the old response; it
 * holds no logic of its own.
 */
export interface LegacyRoute {
  /** Where the service is mounted, e.g. `/system/icc` (no trailing slash). */
  prefix: string;
  /**
   * Answers a request whose path starts with the prefix. `path` is the rest, e.g. `/notify`
   * (query string excluded). Must always respond: unknown paths get the old service's 404.
   */
  handle(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> | void;
  /** Takes over a WebSocket upgrade under the prefix; absent when the service had none. */
  upgrade?(req: IncomingMessage, socket: Duplex, head: Buffer, path: string): void;
}

/**
 * The route for a path: the longest matching prefix wins (so `/system/icc` before `/system`),
 * with the rest of the path.
 */
export function matchRoute(
  routes: readonly LegacyRoute[],
  pathname: string,
): { route: LegacyRoute; path: string } | null {
  let best: LegacyRoute | null = null;
  for (const route of routes) {
    const matches = pathname === route.prefix || pathname.startsWith(`${route.prefix}/`);
    if (matches && (!best || route.prefix.length > best.prefix.length)) best = route;
  }
  return best ? { route: best, path: pathname.slice(best.prefix.length) || '/' } : null;
}
