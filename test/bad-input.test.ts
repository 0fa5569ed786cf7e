import { createHmac } from 'node:crypto';
import { print } from 'graphql';
import { describe, expect, it } from 'vitest';
import { PublishDocument, PushEventsDocument } from './generated/graphql.ts';
import { TEST_TOKEN_KEY } from './support/app.ts';
import { gql, WAIT_MS } from './support/clients.ts';
import { useInstances } from './support/instances.ts';
import { readJsonLines } from './support/json-lines.ts';
import { openRaw } from './support/raw-ws.ts';

const b64 = (text: string) => Buffer.from(text).toString('base64url');

/** An HS256 token over the exact payload text (so it may hold what JSON.stringify cannot). */
function rawToken(payload: string): string {
  const signing = `${b64('{"alg":"HS256","typ":"JWT"}')}.${b64(payload)}`;
  const signature = createHmac('sha256', TEST_TOKEN_KEY).update(signing).digest('base64url');
  return `${signing}.${signature}`;
}

/** JSON text of `inner` wrapped in `depth` arrays. */
const nested = (depth: number, inner = '1') => `${'['.repeat(depth)}${inner}${']'.repeat(depth)}`;

const codeOf = (body: { errors?: readonly { extensions?: Record<string, unknown> }[] }) =>
  body.errors?.[0]?.extensions?.['code'];

describe('bad input is refused as bad input, never as an internal error', () => {
  const { a, b, onCleanup } = useInstances();

  const post = (url: string, body: string, headers: Record<string, string>) =>
    fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body,
      signal: AbortSignal.timeout(WAIT_MS),
    });

  it('refuses a notify message nested 4,100 levels deep (ICC and GraphQL)', async () => {
    const token = await a.token('deep-sender');
    const notify = await readJsonLines(`${a.url}/system/icc/notify`, {
      authorization: `Bearer ${token}`,
    });
    onCleanup(() => notify.close());
    const { channel_id: channelId } = (await notify.lines.next()) as { channel_id: string };
    const body = `{"channel_id":${JSON.stringify(channelId)},"name":"n","to_users":["deep-sender"],"message":${nested(4100)}}`;
    const icc = await post(`${b.url}/system/icc/notify/publish`, body, {
      authorization: `Bearer ${token}`,
    });
    expect(icc.status).toBe(400);
    expect(await icc.json()).toMatchObject({ error: 'invalid' });

    const overGraphql = await post(
      `${b.url}/graphql`,
      `{"query":${JSON.stringify(print(PublishDocument))},"variables":{"input":{"channelId":${JSON.stringify(channelId)},"name":"n","toUsers":["deep-sender"],"message":${nested(4100)}}}}`,
      { authorization: `Bearer ${token}`, accept: 'application/graphql-response+json' },
    );
    const result = (await overGraphql.json()) as Parameters<typeof codeOf>[0];
    expect(codeOf(result)).toBe('BAD_USER_INPUT');
  });

  it('refuses pushEvents with a lone surrogate or a deeply nested U+0000', async () => {
    const service = await a.token('connector', { service: true });
    const payloads = {
      'lone high surrogate': '{"text":"\\ud800"}',
      'lone low surrogate': '["\\udc00 x"]',
      'U+0000 at depth 70': nested(70, '"\\u0000"'),
      'U+0000 in a key at depth 70': nested(70, '{"\\u0000":1}'),
    };
    for (const [name, payload] of Object.entries(payloads)) {
      const variables = `{"events":[{"accessId":"u1","createdAt":1,"payload":${payload}}]}`;
      const response = await post(
        `${a.url}/graphql`,
        `{"query":"mutation($events:[EventInput!]!){pushEvents(events:$events){accepted}}","variables":${variables}}`,
        { authorization: `Bearer ${service}`, accept: 'application/graphql-response+json' },
      );
      const result = (await response.json()) as Parameters<typeof codeOf>[0];
      expect(codeOf(result), name).toBe('BAD_USER_INPUT');

      const notifier = await post(
        `${b.url}/notifier/push_events`,
        `[{"accessid":"u1","created_at":1,"payload":${payload}}]`,
        { authorization: `Bearer ${service}` },
      );
      expect(notifier.status, name).toBe(400);
    }
    // Well-formed pairs are fine.
    const ok = await gql(
      a.url,
      PushEventsDocument,
      { events: [{ accessId: 'u1', createdAt: 1, payload: { text: '\ud83d\ude00' } }] },
      service,
    );
    expect(ok.body.errors).toBeUndefined();
  });

  it('refuses tokens whose sub holds U+0000 or whose exp is not a finite number', async () => {
    const now = Math.floor(Date.now() / 1000);
    const tokens = {
      'sub with U+0000': rawToken(`{"sub":"u\\u0000x","exp":${now + 600}}`),
      'exp 1e999': rawToken('{"sub":"forever","exp":1e999}'),
    };
    for (const [name, token] of Object.entries(tokens)) {
      const overHttp = await gql(a.url, '{ viewer { userId } }', undefined, token);
      expect(overHttp.status, name).toBe(401);
      expect(codeOf(overHttp.body), name).toBe('UNAUTHENTICATED');
      const raw = await openRaw(b.wsUrl);
      raw.send({ type: 'connection_init', payload: { authorization: `Bearer ${token}` } });
      expect((await raw.closed()).code, name).toBe(4403);
    }
  });
});
