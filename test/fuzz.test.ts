import http from 'node:http';
import fc from 'fast-check';
import { type DocumentNode, Kind, type OperationDefinitionNode, print } from 'graphql';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as operations from './generated/graphql.ts';
import { WAIT_MS } from './support/clients.ts';
import { useInstances } from './support/instances.ts';
import { openAcked, openRaw } from './support/raw-ws.ts';

/**
 * Property-based fuzzing of every GraphQL operation (HTTP and graphql-ws), every legacy
 * endpoint and the WebSocket protocols. In CI: a fixed seed and few runs. `npm run fuzz`: many
 * runs (FUZZ_RUNS) with a random seed (or FUZZ_SEED to replay one).
 */
const RUNS = Number(process.env['FUZZ_RUNS'] ?? 40);
const SEED = process.env['FUZZ_SEED']
  ? Number(process.env['FUZZ_SEED'])
  : process.env['FUZZ_RANDOM']
    ? Date.now() % 2 ** 31
    : 20261122;
const params = { numRuns: RUNS, seed: SEED, endOnFailure: true };
// A long run says which seed it used, so a failure can be replayed with FUZZ_SEED.
if (RUNS !== 40 || SEED !== 20261122) process.stdout.write(`fuzz: seed ${SEED}, ${RUNS} runs\n`);
const LONG = RUNS > 100;

const documents = Object.entries(operations)
  .filter(([name]) => name.endsWith('Document'))
  .map(([name, document]) => {
    const operation = (document as DocumentNode).definitions.find(
      (d): d is OperationDefinitionNode => d.kind === Kind.OPERATION_DEFINITION,
    );
    return {
      name,
      query: print(document as DocumentNode),
      kind: operation?.operation ?? 'query',
      variables: (operation?.variableDefinitions ?? []).map((v) => v.variable.name.value),
    };
  });

// ---- generators -------------------------------------------------------------------------------

const FIELDS = [
  'key',
  'value',
  'visibleTo',
  'accessId',
  'payload',
  'createdAt',
  'channelId',
  'name',
  'toAll',
  'toUsers',
  'toMeeting',
  'toChannels',
  'message',
  'userId',
  'group',
  'id',
  'memberIds',
  'applauseEnabled',
  'status',
  'to',
  'text',
];
const nested = (depth: number, leaf: unknown): unknown => {
  let value = leaf;
  for (let i = 0; i < depth; i++) value = i % 2 ? [value] : { a: value };
  return value;
};
const weirdString = fc.oneof(
  fc.string({ unit: 'grapheme', maxLength: 40 }),
  fc.constantFrom('', ' ', '\u0000', '\ud800', 'a:1', 'c/x:1', '-1', '1e400', 'NaN', '__proto__'),
  fc.integer({ min: 1_000, max: 400_000 }).map((n) => 'x'.repeat(n)),
);
const leaf = fc.oneof(
  weirdString,
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.constantFrom(Number.MAX_SAFE_INTEGER + 2, -0, 2 ** 31, -(2 ** 53)),
);
const value: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 3, arbitrary: leaf },
  { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 4 }) },
  {
    weight: 3,
    arbitrary: fc.array(fc.dictionary(fc.constantFrom(...FIELDS), leaf, { maxKeys: 6 }), {
      maxLength: 5,
    }),
  },
  { weight: 2, arbitrary: fc.dictionary(fc.constantFrom(...FIELDS), leaf, { maxKeys: 6 }) },
  {
    weight: 1,
    arbitrary: fc.tuple(fc.integer({ min: 50, max: 3_000 }), leaf).map(([d, l]) => nested(d, l)),
  },
);
const bytes = fc.oneof(
  fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b)),
  fc.constantFrom(
    Buffer.from([0xff, 0xfe, 0xc3, 0x28]),
    Buffer.from('{"query":"{ viewer { userId } }"'),
    Buffer.from('{"query": "\udc00"}'),
    Buffer.from(`{"a":${'['.repeat(100_000)}`),
  ),
  fc.jsonValue({ maxDepth: 5 }).map((v) => Buffer.from(JSON.stringify(v))),
);

// ---- helpers ----------------------------------------------------------------------------------

/** Sends raw bytes; resolves status and body (status 0 when the server dropped the socket). */
function send(
  url: string,
  method: string,
  body: Buffer | null,
  headers: Record<string, string> = {},
): Promise<{ status: number; text: string }> {
  return new Promise((resolve) => {
    const req = http.request(url, { method, headers, timeout: WAIT_MS });
    req.once('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      // Streams (legacy notify, SSE) stay open: their status is what counts.
      const timer = setTimeout(() => {
        res.destroy();
        resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString() });
      }, 300);
      res.once('end', () => {
        clearTimeout(timer);
        resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString() });
      });
      res.once('error', () => {});
    });
    req.once('timeout', () => req.destroy());
    req.once('error', () => resolve({ status: 0, text: '' }));
    req.end(body ?? undefined);
  });
}

/** A JSON body's error codes (GraphQL responses). */
function codes(text: string): string[] {
  try {
    const parsed = JSON.parse(text) as { errors?: { extensions?: { code?: string } }[] };
    return (parsed.errors ?? []).map((e) => e.extensions?.code ?? '');
  } catch {
    return [];
  }
}

describe('fuzz', { timeout: LONG ? 3_600_000 : 60_000 }, () => {
  const instances = useInstances(
    {
      PING_MIN_INTERVAL_MS: '1',
      ANONYMOUS_CONNECTIONS: '50',
      RATE_LIMIT_PUBLISH: 'off',
      RATE_LIMIT_PING: 'off',
      RATE_LIMIT_CHAT: 'off',
      RATE_LIMIT_APPLAUSE: 'off',
      RATE_LIMIT_WS_TOKEN: 'off',
      LOG_LEVEL: 'silent',
    },
    1,
  );
  const { a, onCleanup } = instances;
  let client: pg.Client;
  let tokens: (string | undefined)[] = [];
  beforeAll(async () => {
    client = new pg.Client({ connectionString: instances.databaseUrl });
    await client.connect();
    tokens = [
      undefined,
      await a.token('fuzz-user', { group: 'g' }),
      await a.token('svc', { service: true }),
    ];
  });
  afterAll(async () => {
    await client?.end();
  });

  /** md5 over every row of every table: equal digests mean no stored data changed. */
  async function digest(): Promise<string> {
    const { rows } = await client.query<{ t: string }>(
      `SELECT table_name AS t FROM information_schema.tables
       WHERE table_schema = 'public' AND table_name NOT LIKE '\\_prisma%' ORDER BY 1`,
    );
    const parts = await Promise.all(
      rows.map(async ({ t }) => {
        const r = await client.query<{ d: string | null }>(
          `SELECT md5(string_agg(x::text, ',' ORDER BY x::text)) AS d FROM "${t}" x`,
        );
        return `${t}:${r.rows[0]?.d ?? ''}`;
      }),
    );
    return parts.join(';');
  }

  const alive = async () => {
    const health = await fetch(`${a.url}/healthz`, { signal: AbortSignal.timeout(WAIT_MS) });
    expect(health.status).toBe(200);
  };
  const auth = (token: string | undefined): Record<string, string> =>
    token ? { authorization: `Bearer ${token}` } : {};
  const pickToken = fc.integer({ min: 0, max: 2 });

  it('GraphQL over HTTP: every operation with malformed variables', async () => {
    const mutationsAndQueries = documents.filter((d) => d.kind !== 'subscription');
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...mutationsAndQueries),
        fc.array(value, { minLength: 1, maxLength: 3 }),
        pickToken,
        async (doc, values, who) => {
          const variables = Object.fromEntries(
            doc.variables.map((v, i) => [v, values[i % values.length]]),
          );
          const before = await digest();
          const body = Buffer.from(JSON.stringify({ query: doc.query, variables }));
          const res = await send(`${a.url}/graphql`, 'POST', body, {
            'content-type': 'application/json',
            ...auth(tokens[who]),
          });
          expect(res.status, `${doc.name} ${res.text.slice(0, 300)}`).toBeGreaterThan(0);
          expect(res.status, `${doc.name} ${res.text.slice(0, 300)}`).toBeLessThan(500);
          expect(codes(res.text), `${doc.name} ${res.text.slice(0, 300)}`).not.toContain(
            'INTERNAL_SERVER_ERROR',
          );
          if (codes(res.text).length > 0) expect(await digest(), doc.name).toBe(before);
        },
      ),
      params,
    );
    await alive();
  });

  it('GraphQL over HTTP: malformed bodies, content types and methods', async () => {
    await fc.assert(
      fc.asyncProperty(
        bytes,
        fc.constantFrom('POST', 'GET', 'PUT', 'DELETE', 'PATCH'),
        fc.constantFrom('application/json', 'text/plain', 'application/graphql', 'x/y', ''),
        async (body, method, type) => {
          const before = await digest();
          const res = await send(`${a.url}/graphql`, method, method === 'GET' ? null : body, {
            ...(type ? { 'content-type': type } : {}),
          });
          expect(res.status, res.text.slice(0, 300)).toBeLessThan(500);
          expect(await digest()).toBe(before);
        },
      ),
      params,
    );
    await alive();
  });

  it('graphql-ws: every operation with malformed variables, and broken frames', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...documents),
        fc.array(value, { minLength: 1, maxLength: 3 }),
        pickToken,
        async (doc, values, who) => {
          const variables = Object.fromEntries(
            doc.variables.map((v, i) => [v, values[i % values.length]]),
          );
          const raw = await openAcked(a.wsUrl, tokens[who]);
          raw.send({ id: '1', type: 'subscribe', payload: { query: doc.query, variables } });
          // A valid subscription may stay silent: the pong proves the server is still answering.
          raw.send({ type: 'ping' });
          const first = (await Promise.race([raw.messages.next(), raw.closed()])) as {
            type?: string;
            payload?: unknown;
            code?: number;
          };
          raw.socket.close();
          // A frame over MAX_BODY_BYTES closes the socket with 1009 (message too big).
          if (first.code !== undefined) return void expect(first.code).toBe(1009);
          expect(['next', 'error', 'complete', 'pong']).toContain(first.type);
          expect(JSON.stringify(first.payload ?? null)).not.toContain('INTERNAL_SERVER_ERROR');
        },
      ),
      { ...params, numRuns: Math.ceil(RUNS / 2) },
    );
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          bytes,
          fc.jsonValue().map((v) => Buffer.from(JSON.stringify(v))),
        ),
        fc.boolean(),
        async (frame, init) => {
          const raw = init ? await openAcked(a.wsUrl) : await openRaw(a.wsUrl);
          raw.socket.send(frame, { binary: false });
          raw.send({ type: 'ping' });
          // Either the frame was ignored / answered (then our ping gets its pong) or refused with 4xxx.
          const outcome = await Promise.race([raw.messages.next(), raw.closed()]);
          raw.socket.terminate();
          if ('code' in (outcome as object)) {
            const { code } = outcome as { code: number };
            expect(code === 1007 || (code >= 4400 && code < 4500), `closed ${code}`).toBe(true);
          }
        },
      ),
      { ...params, numRuns: Math.ceil(RUNS / 2) },
    );
    await alive();
  });

  const LEGACY: [string, string][] = [
    ['POST', '/system/icc/notify/publish'],
    ['GET', '/system/icc/notify?meeting_id=1'],
    ['POST', '/system/icc/applause/send?meeting_id=1'],
    ['GET', '/system/icc/applause?meeting_id=1'],
    ['POST', '/system/notify/send'],
    ['GET', '/system/notify'],
    ['POST', '/system/applause'],
    ['GET', '/system/autoupdate'],
    ['GET', '/system/projector'],
    ['POST', '/notifier/push_events'],
    ['POST', '/notifier/drop_user'],
    ['GET', '/notifier/clients'],
    ['POST', '/chatter/user'],
    ['GET', '/chatter/ws_token'],
    ['GET', '/chatter/messages?from=fuzz-user&to=x'],
    ['GET', '/chatter/connections'],
    ['POST', '/heartbeat/ping'],
    ['GET', '/heartbeat/subscribe/fuzz-user'],
  ];

  it('legacy endpoints: malformed bodies, query strings and headers', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...LEGACY),
        bytes,
        pickToken,
        fc.option(fc.string({ maxLength: 20 }), { nil: undefined }),
        async ([method, path], body, who, junk) => {
          const before = await digest();
          const url =
            junk === undefined
              ? path
              : `${path}${path.includes('?') ? '&' : '?'}${encodeURIComponent(junk)}=${encodeURIComponent(junk)}`;
          const res = await send(`${a.url}${url}`, method, method === 'GET' ? null : body, {
            'content-type': 'application/json',
            ...auth(tokens[who]),
          });
          expect(res.status, `${method} ${url} ${res.text.slice(0, 200)}`).toBeGreaterThan(0);
          expect(res.status, `${method} ${url} ${res.text.slice(0, 200)}`).toBeLessThan(500);
          if (res.status >= 400) expect(await digest(), `${method} ${url}`).toBe(before);
        },
      ),
      { ...params, numRuns: RUNS * 2 },
    );
    await alive();
  });

  it('legacy WebSockets (notifier, chatter): broken frames close only that socket', async () => {
    const wsBase = a.url.replace('http', 'ws');
    const wsToken = async () => {
      const res = await fetch(`${a.url}/chatter/ws_token`, { headers: auth(tokens[1]) });
      return ((await res.json()) as { result: { token: string } }).result.token;
    };
    await fc.assert(
      fc.asyncProperty(
        fc.boolean(),
        fc.array(bytes, { minLength: 1, maxLength: 3 }),
        async (notifier, frames) => {
          const url = notifier
            ? `${wsBase}/notifier/subscribe_to_events?token=${tokens[1]}`
            : `${wsBase}/chatter/ws?token=${await wsToken()}`;
          const raw = await openRaw(url, { protocol: null });
          onCleanup(() => raw.socket.terminate());
          for (const frame of frames) raw.socket.send(frame, { binary: false });
          raw.socket.close();
          const { code } = await raw.closed();
          expect(code, `closed ${code}`).toBeLessThan(4500);
        },
      ),
      { ...params, numRuns: Math.ceil(RUNS / 2) },
    );
    await alive();
  });
});

/** Regressions the fuzzer found, kept as plain examples. */
describe('fuzz regressions', () => {
  const { a } = useInstances({}, 1, { redis: false });

  it('refuses U+0000 in GraphQL input with BAD_USER_INPUT (Postgres cannot store it)', async () => {
    const service = await a.token('svc', { service: true });
    const post = async (body: object) => {
      const res = await fetch(`${a.url}/graphql`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${service}` },
        body: JSON.stringify(body),
      });
      return (await res.json()) as { errors?: { extensions?: { code?: string } }[] };
    };
    const viaVariable = await post({
      query: 'mutation($m: ID!) { sendApplause(meetingId: $m) }',
      variables: { m: '\u0000' },
    });
    expect(viaVariable.errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
    const viaLiteral = await post({ query: 'mutation { sendApplause(meetingId: "\\u0000") }' });
    expect(viaLiteral.errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
    const raw = await openAcked(a.wsUrl, service);
    raw.send({
      id: '1',
      type: 'subscribe',
      payload: {
        query: 'mutation($k: String!) { upsertUser(input: { userId: $k }) { userId } }',
        variables: { k: 'a\u0000' },
      },
    });
    expect(JSON.stringify(await raw.messages.next())).toContain('BAD_USER_INPUT');
    raw.socket.close();
    const icc = await fetch(`${a.url}/system/icc/applause/send?meeting_id=1`, { method: 'POST' });
    expect(icc.status).toBe(401);
    const chatter = await fetch(`${a.url}/chatter/user`, {
      method: 'POST',
      headers: { authorization: `Bearer ${service}` },
      body: JSON.stringify({ username: 'nul\u0000user' }),
    });
    expect(chatter.status).toBe(400);
  });
});
