import { randomBytes } from 'node:crypto';
import { PassThrough } from 'node:stream';
import { SignJWT } from 'jose';
import { afterAll, describe, expect, it } from 'vitest';
import { buildApp } from '../src/app.ts';
import { loadConfig } from '../src/config.ts';
import { createLogger } from '../src/logger.ts';
import {
  AutoupdateDocument,
  LastSeenDocument,
  MessagesDocument,
  PresenceDocument,
  SendChatMessageDocument,
  UpsertUserDocument,
  WriteDataDocument,
} from './generated/graphql.ts';
import { TEST_TOKEN_KEY } from './support/app.ts';
import { gql, nextMatching, pingAccepted } from './support/clients.ts';
import { useInstances } from './support/instances.ts';
import { createTestDatabase } from './support/postgres.ts';
import { openRaw } from './support/raw-ws.ts';

const unique = (name: string) => `${name}-${randomBytes(4).toString('hex')}`;
const key = new TextEncoder().encode(TEST_TOKEN_KEY);
const now = () => Math.floor(Date.now() / 1000);
const b64 = (value: object) => Buffer.from(JSON.stringify(value)).toString('base64url');

/** Tokens the server must refuse, each otherwise well-formed. */
async function badTokens(sub: string): Promise<Record<string, string>> {
  const sign = (alg: string, build: (jwt: SignJWT) => SignJWT) =>
    build(new SignJWT({}).setProtectedHeader({ alg }).setSubject(sub).setIssuedAt()).sign(key);
  return {
    'alg none': `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ sub, exp: now() + 600 })}.`,
    'alg HS512': await sign('HS512', (j) => j.setExpirationTime(now() + 600)),
    'no exp': await sign('HS256', (j) => j),
    'past exp': await sign('HS256', (j) => j.setExpirationTime(now() - 120)),
    'future nbf': await sign('HS256', (j) =>
      j.setExpirationTime(now() + 3600).setNotBefore(now() + 600),
    ),
  };
}

const SERVICE_SECRET = 'notifier-secret-that-must-not-leak';
const CHATTER_SECRET = 'chatter-secret-that-must-not-leak';

describe('security', () => {
  const { a, b, ws } = useInstances((index) => ({
    NOTIFIER_SECRET: SERVICE_SECRET,
    CHATTER_SERVICE_SECRET: CHATTER_SECRET,
    PING_MIN_INTERVAL_MS: '1',
    ...(index === 1 ? { ALLOWED_ORIGINS: 'https://app.example.org' } : {}),
  }));

  it('refuses bad JWTs over HTTP, graphql-ws and a legacy endpoint', async () => {
    for (const [name, token] of Object.entries(await badTokens(unique('jwt')))) {
      const overHttp = await gql(a.url, '{ viewer { userId } }', undefined, token);
      expect(overHttp.status, name).toBe(401);
      expect(overHttp.body.errors?.[0]?.extensions?.['code'], name).toBe('UNAUTHENTICATED');
      const raw = await openRaw(a.wsUrl);
      raw.send({ type: 'connection_init', payload: { authorization: `Bearer ${token}` } });
      expect((await raw.closed()).code, name).toBe(4403);
      const icc = await fetch(`${a.url}/system/icc/notify/publish`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}` },
        body: '{}',
      });
      expect(icc.status, name).toBe(401);
    }
  });

  describe('CSRF and CORS', () => {
    const post = (url: string, headers: Record<string, string>, body: string) =>
      fetch(`${url}/graphql`, { method: 'POST', headers, body });
    const query = JSON.stringify({ query: '{ viewer { userId } }' });

    it('refuses POSTs a form could send (simple content types, none) unless a CSRF header is set', async () => {
      for (const type of [
        'text/plain',
        'application/x-www-form-urlencoded',
        'multipart/form-data',
      ]) {
        const refused = await post(a.url, { 'content-type': type }, query);
        expect(refused.status, type).toBe(403);
        expect(await refused.text()).toMatch(/CSRF/);
      }
      expect((await post(a.url, {}, query)).status).toBe(403);
      const json = await post(a.url, { 'content-type': 'application/json' }, query);
      expect(json.status).toBe(200);
      // With the header the request reaches GraphQL (which then judges the content type).
      const marked = await post(
        a.url,
        { 'content-type': 'text/plain', 'x-graphql-csrf': '1' },
        query,
      );
      expect(marked.status).not.toBe(403);
      // GET runs queries only and stays open; GraphiQL is still served.
      const get = await fetch(
        `${a.url}/graphql?query=${encodeURIComponent('{ viewer { userId } }')}`,
        {
          headers: { accept: 'application/json' },
        },
      );
      expect(get.status).toBe(200);
      const graphiql = await fetch(`${a.url}/graphql`, { headers: { accept: 'text/html' } });
      expect(await graphiql.text()).toMatch(/graphiql/i);
    });

    const preflight = (url: string, origin: string) =>
      fetch(`${url}/graphql`, {
        method: 'OPTIONS',
        headers: {
          origin,
          'access-control-request-method': 'POST',
          'access-control-request-headers': 'content-type,authorization',
        },
      });

    it('sends no CORS headers by default', async () => {
      const answer = await preflight(a.url, 'https://app.example.org');
      expect(answer.headers.get('access-control-allow-origin')).toBeNull();
      const get = await post(
        a.url,
        { 'content-type': 'application/json', origin: 'https://x.example' },
        query,
      );
      expect(get.headers.get('access-control-allow-origin')).toBeNull();
    });

    it('allows exactly the origins in ALLOWED_ORIGINS (HTTP and SSE)', async () => {
      const allowed = await preflight(b.url, 'https://app.example.org');
      expect(allowed.headers.get('access-control-allow-origin')).toBe('https://app.example.org');
      const other = await preflight(b.url, 'https://evil.example');
      expect(other.headers.get('access-control-allow-origin')).not.toBe('https://evil.example');
      const answer = await post(
        b.url,
        { 'content-type': 'application/json', origin: 'https://app.example.org' },
        query,
      );
      expect(answer.headers.get('access-control-allow-origin')).toBe('https://app.example.org');
      const controller = new AbortController();
      const sse = await fetch(
        `${b.url}/graphql?query=${encodeURIComponent('subscription { presence(userId: "x") { userId } }')}`,
        {
          headers: {
            accept: 'text/event-stream',
            origin: 'https://app.example.org',
            authorization: `Bearer ${await b.token(unique('cors'))}`,
          },
          signal: controller.signal,
        },
      );
      expect(sse.headers.get('access-control-allow-origin')).toBe('https://app.example.org');
      controller.abort();
    });
  });

  describe('service-only operations refuse users and anonymous callers', () => {
    const mutations = {
      pushEvents: 'mutation { pushEvents(events: [{ accessId: "1", payload: 1 }]) { accepted } }',
      writeData: 'mutation { writeData(changes: [{ key: "c/x:1", value: 1 }]) }',
      dropUser: 'mutation { dropUser(userId: "1") { connectionsClosed } }',
      upsertUser: 'mutation { upsertUser(input: { userId: "u1", group: "g" }) { userId } }',
      configureMeeting: 'mutation { configureMeeting(input: { id: "77" }) { id } }',
    };
    it.each(Object.entries(mutations))('%s', async (_name, mutation) => {
      const user = await gql(a.url, mutation, undefined, await a.token(unique('user')));
      expect(user.body.errors?.[0]?.extensions?.['code']).toBe('FORBIDDEN');
      expect(user.body.data ?? null).toBeNull();
      const anonymous = await gql(a.url, mutation);
      expect(anonymous.body.errors?.[0]?.extensions?.['code']).toBe('UNAUTHENTICATED');
    });

    it('notifier push_events, drop_user, clients and chatter POST user', async () => {
      const token = await a.token(unique('user'));
      const endpoints = [
        ['POST', '/notifier/push_events', '[{"accessid":"1","payload":1}]'],
        ['POST', '/notifier/drop_user', '{"drop_access_id":"1"}'],
        ['GET', '/notifier/clients', undefined],
      ] as const;
      for (const [method, path, body] of endpoints) {
        const call = (headers: Record<string, string>) =>
          fetch(`${a.url}${path}`, {
            method,
            headers: { 'content-type': 'application/json', ...headers },
            ...(body ? { body } : {}),
          });
        expect((await call({ authorization: `Bearer ${token}` })).status, path).toBe(403);
        expect((await call({})).status, path).toBe(401);
        expect((await call({ authorization: 'wrong-secret' })).status, path).toBe(401);
      }
      const createUser = (headers: Record<string, string>) =>
        fetch(`${a.url}/chatter/user`, {
          method: 'POST',
          headers,
          body: '{"username":"intruder","user_group":"g"}',
        });
      for (const headers of [{ authorization: `Bearer ${token}` }, {}, { authorization: 'nope' }]) {
        const answer = await createUser(headers);
        expect(answer.status).toBe(400);
        expect(await answer.text()).toMatch(/Not authorised/);
      }
    });
  });

  describe('user-scoped reads', () => {
    it('shows a user only its own conversations', async () => {
      const group = unique('g');
      const [x, y, z] = [unique('x'), unique('y'), unique('z')];
      const service = await a.token('svc', { service: true });
      for (const userId of [x, y, z]) {
        await gql(a.url, UpsertUserDocument, { input: { userId, group } }, service);
      }
      const ty = await a.token(y, { group });
      const sent = await gql(a.url, SendChatMessageDocument, { to: z, text: 'secret' }, ty);
      expect(sent.body.errors).toBeUndefined();
      const tx = await b.token(x, { group });
      const peek = await gql(b.url, MessagesDocument, { peerId: z }, tx);
      expect(peek.body.data?.messages).toEqual([]);
      const chatter = await fetch(`${b.url}/chatter/messages?from=${y}&to=${z}`, {
        headers: { authorization: `Bearer ${tx}` },
      });
      expect(chatter.status).toBe(422);
    });

    it('hides data whose visibleTo excludes the viewer', async () => {
      const [alice, bob] = [unique('alice'), unique('bob')];
      const collection = unique('secret').replaceAll('-', '_');
      const service = await a.token('svc', { service: true });
      await gql(
        a.url,
        WriteDataDocument,
        { changes: [{ key: `${collection}:1`, value: { s: 1 }, visibleTo: [alice] }] },
        service,
      );
      const first = async (userId: string) => {
        const client = ws(b, await b.token(userId));
        const batch = await client.subscribe(AutoupdateDocument, {}).next();
        return JSON.stringify(batch.data?.autoupdate.changed ?? {});
      };
      expect(await first(alice)).toContain(collection);
      expect(await first(bob)).not.toContain(collection);
    });

    it('shows INVISIBLE pings to the user only', async () => {
      const [alice, bob] = [unique('alice'), unique('bob')];
      const ta = await a.token(alice);
      const tb = await b.token(bob);
      const watch = ws(b, tb).subscribe(PresenceDocument, { userId: alice });
      // Bob's stream is live once he sees one of Alice's visible pings.
      await pingAccepted(a.url, 'ACTIVE', ta);
      await nextMatching(watch, (r) => r.data?.presence.status === 'ACTIVE');
      await pingAccepted(a.url, 'INVISIBLE', ta);
      await pingAccepted(a.url, 'AWAY', ta);
      const next = await watch.next();
      expect(next.data?.presence.status).toBe('AWAY');
      await pingAccepted(a.url, 'INVISIBLE', ta);
      const own = await gql(b.url, LastSeenDocument, { userId: alice }, ta);
      expect(own.body.data?.lastSeen?.status).toBe('INVISIBLE');
      const other = await gql(b.url, LastSeenDocument, { userId: alice }, tb);
      expect(other.body.data?.lastSeen?.status).not.toBe('INVISIBLE');
    });
  });
});

describe('log redaction', () => {
  const lines: string[] = [];
  let stop: (() => Promise<void>) | null = null;
  afterAll(async () => {
    await stop?.();
  });

  it('never writes tokens, ws tokens or secrets to the log', async () => {
    const db = await createTestDatabase();
    const sink = new PassThrough();
    sink.on('data', (chunk: Buffer) => lines.push(...chunk.toString().split('\n')));
    const config = loadConfig({
      PORT: '0',
      HOST: '127.0.0.1',
      LOG_LEVEL: 'trace',
      AUTH_TOKEN_KEY: TEST_TOKEN_KEY,
      DATABASE_URL: db.url,
      NOTIFIER_SECRET: SERVICE_SECRET,
      CHATTER_SERVICE_SECRET: CHATTER_SECRET,
      RATE_LIMIT_WS_TOKEN: '1/1m',
      SHUTDOWN_TIMEOUT_MS: '2000',
    });
    const app = await buildApp({ config, logger: createLogger('trace', sink) });
    const url = await app.start();
    stop = async () => {
      await app.stop();
      await db.drop();
    };
    const user = unique('logged');
    const token = await app.auth.sign({ sub: user, group: 'g' });
    const service = await app.auth.sign({ sub: 'svc', service: true });
    const secrets = [token, service, TEST_TOKEN_KEY, SERVICE_SECRET, CHATTER_SECRET];

    await gql(url, '{ viewer { userId } }', undefined, token);
    const wsToken = (await gql(url, 'mutation { createWsToken { token } }', undefined, token)).body
      .data as { createWsToken: { token: string } };
    secrets.push(wsToken.createWsToken.token);
    // Over the rate limit: a warn line naming the limit and the user, not the token.
    await gql(url, 'mutation { createWsToken { token } }', undefined, token);
    const socket = await openRaw(
      `${url.replace('http', 'ws')}/chatter/ws?token=${wsToken.createWsToken.token}`,
      {
        protocol: null,
      },
    );
    socket.socket.close();
    await socket.closed();
    const bad = `${token.slice(0, -4)}AAAA`;
    secrets.push(bad);
    await gql(url, '{ viewer { userId } }', undefined, bad);
    const raw = await openRaw(`${url.replace('http', 'ws')}/graphql`);
    raw.send({ type: 'connection_init', payload: { authorization: `Bearer ${bad}`, token: bad } });
    await raw.closed();
    await fetch(`${url}/heartbeat/ping?token=${token}`, { method: 'POST', body: '{"status":"1"}' });
    await fetch(`${url}/notifier/clients`, { headers: { authorization: SERVICE_SECRET } });
    await fetch(`${url}/notifier/clients`, { headers: { authorization: `Bearer ${service}x` } });
    await fetch(`${url}/chatter/user`, {
      method: 'POST',
      headers: { authorization: CHATTER_SECRET },
      body: '{"username":"u-logged"}',
    });

    const log = lines.join('\n');
    expect(log.length).toBeGreaterThan(0);
    for (const secret of secrets) {
      expect(log.includes(secret), `log contains ${secret.slice(0, 12)}...`).toBe(false);
      // The signature alone is what would let someone replay a token.
      const signature = secret.split('.')[2];
      if (signature && signature.length > 8) expect(log.includes(signature)).toBe(false);
    }
    const warning = lines
      .filter((l) => l.includes('"limit"'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(warning).toContainEqual(
      expect.objectContaining({ level: 40, limit: 'rate', operation: 'createWsToken', user }),
    );
  });
});
