import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import { type ExecutionResult, print } from 'graphql';
import { createClient as createSseClient } from 'graphql-sse';
import { createClient as createWsClient, type Client as WsClient } from 'graphql-ws';
import WebSocket from 'ws';
import { PingDocument, type PingMutation, type PresenceStatus } from '../generated/graphql.ts';

/** Default bound of every wait in the tests. */
export const WAIT_MS = 5_000;

/**
 * A queue over a stream of results: `next()` waits (bounded) for the next one, so tests never
 * sleep. `close()` stops the subscription.
 */
export class ResultQueue<T> {
  readonly #items: T[] = [];
  readonly #waiters: ((item: T) => void)[] = [];
  #ended = false;
  #error: unknown = null;
  #endWaiters: (() => void)[] = [];
  dispose: () => void = () => {};

  push(item: T): void {
    const waiter = this.#waiters.shift();
    if (waiter) waiter(item);
    else this.#items.push(item);
  }

  end(error?: unknown): void {
    this.#ended = true;
    this.#error = error ?? null;
    for (const w of this.#endWaiters.splice(0)) w();
  }

  get ended(): boolean {
    return this.#ended;
  }

  get error(): unknown {
    return this.#error;
  }

  /** The next item, or a rejection after `timeoutMs`. */
  next(timeoutMs = WAIT_MS): Promise<T> {
    const item = this.#items.shift();
    if (item !== undefined) return Promise.resolve(item);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const i = this.#waiters.indexOf(waiter);
        if (i >= 0) this.#waiters.splice(i, 1);
        reject(new Error(`no event within ${timeoutMs} ms`));
      }, timeoutMs);
      const waiter = (value: T) => {
        clearTimeout(timer);
        resolve(value);
      };
      this.#waiters.push(waiter);
    });
  }

  /** Resolves when the stream has ended (completed, errored or closed). */
  waitForEnd(timeoutMs = WAIT_MS): Promise<void> {
    if (this.#ended) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`stream did not end within ${timeoutMs} ms`)),
        timeoutMs,
      );
      this.#endWaiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /** Items received and not yet taken. */
  get pending(): readonly T[] {
    return this.#items;
  }

  close(): void {
    this.dispose();
  }
}

/**
 * Reads items until one matches and returns it (bounded: each wait by `timeoutMs`, and the
 * number of items skipped).
 */
export async function nextMatching<T, S extends T = T>(
  queue: ResultQueue<T>,
  predicate: ((item: T) => item is S) | ((item: T) => boolean),
  { maxItems = 200, timeoutMs = WAIT_MS }: { maxItems?: number; timeoutMs?: number } = {},
): Promise<S> {
  for (let i = 0; i < maxItems; i++) {
    const item = await queue.next(timeoutMs);
    if (predicate(item)) return item as S;
  }
  throw new Error(`no matching item within ${maxItems} items`);
}

/**
 * Warms up a subscription that becomes live at an unknown moment: repeats `action` (e.g. sends
 * a message) and waits up to `pollMs` for `poll` to yield (e.g. that message arriving), at most
 * `attempts` times. Returns the first value polled, or null when none came.
 */
export async function warmUp<T>(
  action: () => unknown,
  poll: (timeoutMs: number) => Promise<T>,
  { attempts = 40, pollMs = 250 }: { attempts?: number; pollMs?: number } = {},
): Promise<T | null> {
  for (let attempt = 0; attempt < attempts; attempt++) {
    await action();
    const value = await poll(pollMs).catch(() => null);
    if (value !== null) return value;
  }
  return null;
}

type Sink<T> = Parameters<WsClient['subscribe']>[1] & { next: (value: ExecutionResult<T>) => void };

function sinkInto<T>(queue: ResultQueue<ExecutionResult<T>>): Sink<T> {
  return {
    next: (value) => queue.push(value as ExecutionResult<T>),
    error: (error) => queue.end(error),
    complete: () => queue.end(),
  };
}

/** A graphql-ws client with a token in connection_init; `retryAttempts: 0` so failures surface. */
export function wsClient(wsUrl: string, token?: string, options: { lazy?: boolean } = {}) {
  const closes: { code: number; reason: string }[] = [];
  const client = createWsClient({
    url: wsUrl,
    webSocketImpl: WebSocket,
    retryAttempts: 0,
    lazy: options.lazy ?? true,
    connectionParams: token ? { authorization: `Bearer ${token}` } : {},
    on: {
      closed: (event) => {
        const e = event as { code: number; reason: string };
        closes.push({ code: e.code, reason: e.reason });
      },
    },
  });
  return {
    client,
    closes,
    subscribe<T, V extends Record<string, unknown>>(
      document: TypedDocumentNode<T, V>,
      variables?: V,
    ) {
      const queue = new ResultQueue<ExecutionResult<T>>();
      queue.dispose = client.subscribe(
        { query: print(document), variables: variables ?? {} },
        sinkInto(queue),
      );
      return queue;
    },
    dispose: () => client.dispose(),
  };
}

/** A graphql-sse client; `singleConnection` selects the protocol's single-connection mode. */
export function sseClient(
  url: string,
  token?: string,
  options: { singleConnection?: boolean } = {},
) {
  const client = createSseClient({
    url: `${url}/graphql`,
    singleConnection: options.singleConnection ?? false,
    retryAttempts: 0,
    headers: token ? { authorization: `Bearer ${token}` } : {},
  });
  return {
    client,
    subscribe<T, V extends Record<string, unknown>>(
      document: TypedDocumentNode<T, V>,
      variables?: V,
    ) {
      const queue = new ResultQueue<ExecutionResult<T>>();
      queue.dispose = client.subscribe(
        { query: print(document), variables: variables ?? {} },
        sinkInto(queue),
      );
      return queue;
    },
    dispose: () => client.dispose(),
  };
}

/** A GraphQL request over HTTP POST; returns the status and the parsed body. */
export async function gql<T, V>(
  url: string,
  document: TypedDocumentNode<T, V> | string,
  variables?: V,
  token?: string,
): Promise<{ status: number; body: ExecutionResult<T> }> {
  const response = await fetch(`${url}/graphql`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: 'application/graphql-response+json, application/json',
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    },
    body: JSON.stringify({
      query: typeof document === 'string' ? document : print(document),
      variables,
    }),
    signal: AbortSignal.timeout(WAIT_MS),
  });
  return { status: response.status, body: (await response.json()) as ExecutionResult<T> };
}

/**
 * Pings with `status` over HTTP until the ping is accepted, and returns it. A ping within
 * PING_MIN_INTERVAL_MS of the user's last accepted one is answered with that last ping instead;
 * the tests set the interval to 1 ms, which two requests in a row can still fall within. A
 * ping counts as accepted when the answer is a ping of `status` made after the request left.
 */
export async function pingAccepted(
  url: string,
  status: PresenceStatus,
  token: string,
): Promise<NonNullable<PingMutation['ping']>> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const sent = Date.now();
    const { body } = await gql(url, PingDocument, { status }, token);
    if (body.errors) throw new Error(`ping ${status} failed: ${JSON.stringify(body.errors)}`);
    const ping = body.data?.ping;
    if (ping?.status === status && Date.parse(String(ping.time)) > sent) return ping;
  }
  throw new Error(`ping ${status} was not accepted in 50 attempts`);
}
