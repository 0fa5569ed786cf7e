import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { CreateWsTokenDocument } from './generated/graphql.ts';
import type { TestServer } from './support/app.ts';
import { gql, WAIT_MS } from './support/clients.ts';
import { useInstances } from './support/instances.ts';

const unique = (name: string) => `${name}-${randomBytes(4).toString('hex')}`;
const TTL_S = 120;

type Opened = { socket: WebSocket; status: 101 } | { socket: null; status: number };

/** Opens chatter's WebSocket with `?token=`; resolves the socket, or the refusal's status. */
function openChatter(server: TestServer, token: string): Promise<Opened> {
  const url = `${server.url.replace(/^http/, 'ws')}/chatter/ws?token=${encodeURIComponent(token)}`;
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url);
    const timer = setTimeout(() => reject(new Error('no answer to the upgrade')), WAIT_MS);
    socket.once('open', () => {
      clearTimeout(timer);
      resolve({ socket, status: 101 });
    });
    socket.once('unexpected-response', (_req, res) => {
      clearTimeout(timer);
      res.resume();
      resolve({ socket: null, status: res.statusCode ?? 0 });
    });
    socket.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}

function closeOf(socket: WebSocket): Promise<{ code: number; reason: string }> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('socket did not close')), WAIT_MS);
    socket.once('close', (code, reason) => {
      clearTimeout(timer);
      resolve({ code, reason: String(reason) });
    });
  });
}

describe('ws tokens across two instances', () => {
  const { a, b, onCleanup } = useInstances({ WS_TOKEN_TTL_S: String(TTL_S) });

  const createToken = async (server: TestServer, jwt: string) => {
    const r = await gql(server.url, CreateWsTokenDocument, {}, jwt);
    const created = r.body.data?.createWsToken;
    if (!created) throw new Error(`createWsToken failed: ${JSON.stringify(r.body)}`);
    return created;
  };
  const open = async (server: TestServer, token: string) => {
    const opened = await openChatter(server, token);
    const { socket } = opened;
    if (socket) onCleanup(() => socket.terminate());
    return opened;
  };

  it('makes long random tokens that expire after WS_TOKEN_TTL_S', async () => {
    const jwt = await a.token(unique('u'), { group: 'g' });
    const before = Date.now();
    const created = await createToken(a, jwt);
    const after = Date.now();
    expect(created.token).toMatch(/^[A-Za-z0-9_-]{28,}$/);
    const expiresAt = new Date(created.expiresAt).getTime();
    expect(expiresAt).toBeGreaterThanOrEqual(before + TTL_S * 1000);
    expect(expiresAt).toBeLessThanOrEqual(after + TTL_S * 1000);
    expect((await createToken(a, jwt)).token).not.toBe(created.token);

    const anonymous = await gql(a.url, CreateWsTokenDocument, {});
    expect(anonymous.body.errors?.[0]?.extensions?.['code']).toBe('UNAUTHENTICATED');
  });

  it('opens one socket per token: a second use is refused on any instance', async () => {
    const { token } = await createToken(a, await a.token(unique('u'), { group: 'g' }));
    expect((await open(b, token)).status).toBe(101);
    expect((await open(a, token)).status).toBe(403);
    expect((await open(b, token)).status).toBe(403);
  });

  it('lets exactly one of two concurrent uses win', async () => {
    const jwt = await b.token(unique('u'), { group: 'g' });
    for (let round = 0; round < 8; round++) {
      const { token } = await createToken(b, jwt);
      const results = await Promise.all([open(a, token), open(b, token)]);
      expect(results.map((r) => r.status).sort()).toEqual([101, 403]);
    }
  });

  it('refuses and deletes expired tokens; the purge removes the rest', async () => {
    const jwt = await a.token(unique('u'), { group: 'g' });
    const { prisma } = a.app.db;
    const used = await createToken(a, jwt);
    const left = await createToken(b, jwt);
    const fresh = await createToken(b, jwt);
    // The clock cannot be moved: the tokens' expiry is moved into the past instead.
    await prisma.wsToken.updateMany({
      where: { token: { in: [used.token, left.token] } },
      data: { expiresAt: new Date(Date.now() - 1000) },
    });
    expect((await open(b, used.token)).status).toBe(403);
    expect(await prisma.wsToken.count({ where: { token: used.token } })).toBe(0);

    expect(await a.app.services.wsTokens.purge()).toBeGreaterThanOrEqual(1);
    expect(await prisma.wsToken.count({ where: { token: left.token } })).toBe(0);
    expect(await prisma.wsToken.count({ where: { token: fresh.token } })).toBe(1);
    expect((await open(a, fresh.token)).status).toBe(101);
  });

  it('refuses malformed tokens without touching the database and bad JWTs', async () => {
    for (const token of ['', 'bogus', 'x'.repeat(500), "'; DROP TABLE ws_tokens; --aaaaaaaaaaaa"]) {
      expect((await open(a, token)).status).toBe(403);
    }
    expect((await open(a, 'a.b.c')).status).toBe(403);
  });

  it('closes a socket opened with a ws token when its creator token expires (4401)', async () => {
    const jwt = await a.token(unique('u'), { group: 'g', ttlSeconds: 2 });
    const { token } = await createToken(a, jwt);
    const opened = await open(b, token);
    if (!opened.socket) throw new Error(`refused with ${opened.status}`);
    expect(await closeOf(opened.socket)).toEqual({ code: 4401, reason: 'token expired' });
  });
});
