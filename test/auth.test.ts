import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { base64url, exportJWK, generateKeyPair, type JWTPayload, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAuthenticator } from '../src/auth/index.ts';
import { createTokenCache, MAX_CACHED_TOKEN_LENGTH } from '../src/auth/token-cache.ts';
import { AppError, ErrorCode } from '../src/errors.ts';
import { createLogger } from '../src/logger.ts';

const KEY = 'switchboard-test-secret-0123456789-abcdefghij';
const KEY_BYTES = new TextEncoder().encode(KEY);
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const silent = createLogger('silent');
const now = () => Math.floor(Date.now() / 1000);

/** Signs arbitrary claims (no defaults added) so each test controls exactly what is present. */
async function signRaw(
  payload: JWTPayload,
  options: { alg?: string; key?: Uint8Array | CryptoKey; kid?: string } = {},
): Promise<string> {
  const header = { alg: options.alg ?? 'HS256', typ: 'JWT' };
  return new SignJWT(payload)
    .setProtectedHeader(options.kid === undefined ? header : { ...header, kid: options.kid })
    .sign(options.key ?? KEY_BYTES);
}

/** Asserts an UNAUTHENTICATED AppError whose message matches and never contains the token. */
async function expectRefused(promise: Promise<unknown>, message: RegExp, token?: string) {
  const error: unknown = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(AppError);
  const appError = error as AppError;
  expect(appError.code).toBe(ErrorCode.Unauthenticated);
  expect(appError.message).toMatch(message);
  if (token !== undefined) expect(appError.message).not.toContain(token);
}

describe('verify with an HS256 key', () => {
  const auth = createAuthenticator({ tokenKey: KEY, logger: silent });

  it('accepts a valid token and builds the viewer', async () => {
    const exp = now() + 600;
    const token = await signRaw({ sub: '42', group: 'blue', exp });
    await expect(auth.verify(token)).resolves.toEqual({
      userId: '42',
      group: 'blue',
      isService: false,
      expiresAt: exp * 1000,
    });
    expect(auth.generatedKey).toBe(false);
    expect(auth.generatedTokenKey).toBeNull();
  });

  it('converts a numeric sub to a string', async () => {
    const viewer = await auth.verify(
      await signRaw({ sub: 7 as unknown as string, exp: now() + 60 }),
    );
    expect(viewer.userId).toBe('7');
  });

  it("accepts OpenSlides' integer userId claim when there is no sub", async () => {
    const viewer = await auth.verify(await signRaw({ userId: 5, sessionId: 'x', exp: now() + 60 }));
    expect(viewer).toMatchObject({ userId: '5', group: null, isService: false });
  });

  it('marks service tokens from a scope string or array', async () => {
    const fromString = await auth.verify(
      await signRaw({ sub: 'c1', scope: 'read service', exp: now() + 60 }),
    );
    expect(fromString.isService).toBe(true);
    const fromArray = await auth.verify(
      await signRaw({ sub: 'c1', scope: ['service'], exp: now() + 60 }),
    );
    expect(fromArray.isService).toBe(true);
    const other = await auth.verify(
      await signRaw({ sub: 'c1', scope: 'services read', exp: now() + 60 }),
    );
    expect(other.isService).toBe(false);
  });

  it('refuses an expired token', async () => {
    const token = await signRaw({ sub: '1', exp: now() - 60 });
    await expectRefused(auth.verify(token), /^token expired$/, token);
  });

  it('refuses a token without exp', async () => {
    const token = await signRaw({ sub: '1' });
    await expectRefused(auth.verify(token), /expiry/, token);
  });

  it('refuses a token whose nbf is in the future', async () => {
    const token = await signRaw({ sub: '1', nbf: now() + 120, exp: now() + 600 });
    await expectRefused(auth.verify(token), /not yet valid/, token);
  });

  it('refuses a token without any user id', async () => {
    await expectRefused(auth.verify(await signRaw({ exp: now() + 60 })), /no subject/);
    await expectRefused(auth.verify(await signRaw({ sub: '', exp: now() + 60 })), /no subject/);
  });

  it('refuses a wrong signature', async () => {
    const token = await signRaw(
      { sub: '1', exp: now() + 60 },
      { key: new TextEncoder().encode('another-secret-another-secret-another') },
    );
    await expectRefused(auth.verify(token), /^invalid token signature$/, token);
  });

  it('refuses alg "none"', async () => {
    const enc = (value: object) => base64url.encode(JSON.stringify(value));
    const token = `${enc({ alg: 'none', typ: 'JWT' })}.${enc({ sub: '1', exp: now() + 60 })}.`;
    await expectRefused(auth.verify(token), /^token algorithm not allowed$/, token);
  });

  it('refuses HS512 when HS256 is configured, even with the right key', async () => {
    const token = await signRaw({ sub: '1', exp: now() + 60 }, { alg: 'HS512' });
    await expectRefused(auth.verify(token), /^token algorithm not allowed$/, token);
  });

  it('refuses garbage', async () => {
    await expectRefused(auth.verify('not-a-jwt'), /malformed/);
    await expectRefused(auth.verify(''), /empty/);
  });

  it('checks issuer and audience when configured, and sign sets them', async () => {
    const strict = createAuthenticator({
      tokenKey: KEY,
      issuer: 'https://idp',
      audience: 'switchboard',
      logger: silent,
    });
    const plain = await signRaw({ sub: '1', exp: now() + 60 });
    await expectRefused(strict.verify(plain), /issuer|audience|claims/);
    const viewer = await strict.verify(await strict.sign({ sub: '1' }));
    expect(viewer.userId).toBe('1');
  });
});

describe('verified-token cache', () => {
  /** An authenticator on a clock the test moves (ms). */
  function onClock(start: number, tokenCacheSize?: number) {
    const clock = { ms: start };
    const auth = createAuthenticator({
      tokenKey: KEY,
      logger: silent,
      now: () => clock.ms,
      ...(tokenCacheSize === undefined ? {} : { tokenCacheSize }),
    });
    return { auth, clock };
  }

  it('serves a verified token from the cache (jose would refuse it before its nbf)', async () => {
    const t0 = now();
    const token = await signRaw({ sub: '1', nbf: t0, exp: t0 + 600 });
    const { auth, clock } = onClock(t0 * 1000 + 10_000);
    const first = await auth.verify(token);
    clock.ms = (t0 - 100) * 1000;
    await expect(auth.verify(token)).resolves.toBe(first);
    const uncached = onClock(t0 * 1000 + 10_000, 0);
    await uncached.auth.verify(token);
    uncached.clock.ms = (t0 - 100) * 1000;
    await expectRefused(uncached.auth.verify(token), /not yet valid/, token);
  });

  it('stops a cached token at its exp', async () => {
    const t0 = now();
    const token = await signRaw({ sub: '1', exp: t0 + 60 });
    const { auth, clock } = onClock(t0 * 1000);
    await expect(auth.verify(token)).resolves.toMatchObject({ userId: '1' });
    await expect(auth.verify(token)).resolves.toMatchObject({ userId: '1' });
    // Past exp and the clock tolerance: refused, though it verified (and was cached) before.
    clock.ms = (t0 + 60 + 6) * 1000;
    await expectRefused(auth.verify(token), /^token expired$/, token);
    clock.ms = t0 * 1000;
    await expect(auth.verify(token)).resolves.toMatchObject({ userId: '1' });
  });

  it('still refuses forged and other-key tokens beside a cached one', async () => {
    const t0 = now();
    const token = await signRaw({ sub: '1', exp: t0 + 600 });
    const { auth } = onClock(t0 * 1000);
    await auth.verify(token);
    const [header, , signature] = token.split('.');
    const claims = base64url.encode(JSON.stringify({ sub: '2', exp: t0 + 600 }));
    const forged = `${header}.${claims}.${signature}`;
    const otherKey = await signRaw(
      { sub: '1', exp: t0 + 600 },
      { key: new TextEncoder().encode('another-secret-another-secret-another') },
    );
    for (let i = 0; i < 2; i++) {
      await expectRefused(auth.verify(forged), /^invalid token signature$/, forged);
      await expectRefused(auth.verify(otherKey), /^invalid token signature$/, otherKey);
    }
  });

  it('does not keep a refusal: a token refused before its nbf passes afterwards', async () => {
    const t0 = now();
    const token = await signRaw({ sub: '1', nbf: t0 + 100, exp: t0 + 600 });
    const { auth, clock } = onClock(t0 * 1000);
    await expectRefused(auth.verify(token), /not yet valid/, token);
    clock.ms = (t0 + 100) * 1000;
    await expect(auth.verify(token)).resolves.toMatchObject({ userId: '1' });
  });

  it('is bounded: the least recently used token is dropped first', () => {
    const cache = createTokenCache(2);
    const viewer = (exp: number) => ({
      userId: 'u',
      group: null,
      isService: false,
      expiresAt: exp,
    });
    cache.set('a', viewer(10_000), 0);
    cache.set('b', viewer(10_000), 0);
    expect(cache.get('a', 1)).toBeDefined();
    cache.set('c', viewer(10_000), 0);
    expect(cache.size).toBe(2);
    expect(cache.get('b', 1)).toBeUndefined();
    expect(cache.get('a', 1)).toBeDefined();
    expect(cache.get('c', 1)).toBeDefined();
    // Never served at or after exp; never stored when already expired, too long, or no exp.
    expect(cache.get('a', 10_000)).toBeUndefined();
    cache.set('d', viewer(5), 5);
    cache.set('x'.repeat(MAX_CACHED_TOKEN_LENGTH + 1), viewer(10_000), 0);
    cache.set('e', { ...viewer(0), expiresAt: null }, 0);
    expect(cache.size).toBe(1);
    const off = createTokenCache(0);
    off.set('a', viewer(10_000), 0);
    expect(off.get('a', 1)).toBeUndefined();
  });
});

describe('sign', () => {
  it('round-trips with group, service and ttl', async () => {
    const auth = createAuthenticator({ tokenKey: KEY, logger: silent });
    const before = Date.now();
    const token = await auth.sign({ sub: '9', group: 'g', service: true, ttlSeconds: 120 });
    const viewer = await auth.verify(token);
    expect(viewer).toMatchObject({ userId: '9', group: 'g', isService: true });
    expect(viewer.expiresAt).toBeGreaterThanOrEqual(Math.floor(before / 1000) * 1000 + 120_000);
    expect(viewer.expiresAt).toBeLessThanOrEqual(before + 121_000);
  });

  it('defaults to one hour', async () => {
    const auth = createAuthenticator({ tokenKey: KEY, logger: silent });
    const viewer = await auth.verify(await auth.sign({ sub: '9' }));
    expect((viewer.expiresAt ?? 0) - Date.now()).toBeGreaterThan(3590_000);
    expect((viewer.expiresAt ?? 0) - Date.now()).toBeLessThanOrEqual(3601_000);
  });

  it('generates a random key when none is configured', async () => {
    const a = createAuthenticator({ logger: silent });
    const b = createAuthenticator({ logger: silent });
    expect(a.generatedKey).toBe(true);
    expect(a.generatedTokenKey).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(a.generatedTokenKey).not.toBe(b.generatedTokenKey);
    const token = await a.sign({ sub: '3' });
    await expect(a.verify(token)).resolves.toMatchObject({ userId: '3' });
    await expectRefused(b.verify(token), /signature/);
    // The printed key works as AUTH_TOKEN_KEY.
    const same = createAuthenticator({ tokenKey: a.generatedTokenKey ?? '', logger: silent });
    await expect(same.verify(token)).resolves.toMatchObject({ userId: '3' });
  });
});

describe('JWKS', () => {
  let server: Server;
  let jwksUrl: string;
  let privateKey: CryptoKey;
  let requests = 0;

  beforeAll(async () => {
    const pair = await generateKeyPair('ES256', { extractable: true });
    privateKey = pair.privateKey;
    const jwk = { ...(await exportJWK(pair.publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' };
    server = createServer((_req, res) => {
      requests += 1;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ keys: [jwk] }));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    jwksUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks.json`;
  });

  afterAll(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it('verifies a token signed with the key set', async () => {
    const auth = createAuthenticator({ jwksUrl, logger: silent });
    expect(auth.generatedKey).toBe(false);
    const token = await signRaw(
      { sub: 'u1', group: 'g', exp: now() + 60 },
      { alg: 'ES256', key: privateKey, kid: 'k1' },
    );
    await expect(auth.verify(token)).resolves.toMatchObject({ userId: 'u1', group: 'g' });
    expect(requests).toBeGreaterThan(0);
  });

  it('refuses an HS256 token', async () => {
    const auth = createAuthenticator({ jwksUrl, logger: silent });
    const token = await signRaw({ sub: 'u1', exp: now() + 60 }, { kid: 'k1' });
    await expectRefused(auth.verify(token), /^token algorithm not allowed$/, token);
  });

  it('refuses an expired token even though the key set is cached', async () => {
    const auth = createAuthenticator({ jwksUrl, logger: silent });
    const good = await signRaw(
      { sub: 'u1', exp: now() + 60 },
      { alg: 'ES256', key: privateKey, kid: 'k1' },
    );
    await auth.verify(good);
    const expired = await signRaw(
      { sub: 'u1', exp: now() - 60 },
      { alg: 'ES256', key: privateKey, kid: 'k1' },
    );
    await expectRefused(auth.verify(expired), /^token expired$/, expired);
  });

  it('refuses alg "none" too', async () => {
    const auth = createAuthenticator({ jwksUrl, logger: silent });
    const enc = (value: object) => base64url.encode(JSON.stringify(value));
    const token = `${enc({ alg: 'none', kid: 'k1' })}.${enc({ sub: '1', exp: now() + 60 })}.`;
    await expectRefused(auth.verify(token), /^token algorithm not allowed$/, token);
  });

  it('reports an unavailable key set as such', async () => {
    const broken = createServer((_req, res) => {
      res.writeHead(500);
      res.end('boom');
    });
    await new Promise<void>((resolve) => broken.listen(0, '127.0.0.1', resolve));
    try {
      const port = (broken.address() as AddressInfo).port;
      const auth = createAuthenticator({ jwksUrl: `http://127.0.0.1:${port}/`, logger: silent });
      const token = await signRaw(
        { sub: 'u1', exp: now() + 60 },
        { alg: 'ES256', key: privateKey, kid: 'k1' },
      );
      await expectRefused(auth.verify(token), /^token keys unavailable$/, token);
    } finally {
      broken.closeAllConnections();
      await new Promise<void>((resolve) => broken.close(() => resolve()));
    }
  });

  it('cannot sign', async () => {
    const auth = createAuthenticator({ jwksUrl, logger: silent });
    await expect(auth.sign({ sub: '1' })).rejects.toThrow(/JWKS/);
  });
});

describe('fromRequest', () => {
  const auth = createAuthenticator({ tokenKey: KEY, logger: silent });
  let token: string;
  beforeAll(async () => {
    token = await auth.sign({ sub: '11', group: 'g' });
  });

  it('reads Authorization: Bearer from a Headers object', async () => {
    const headers = new Headers({ Authorization: `Bearer ${token}` });
    await expect(auth.fromRequest({ headers })).resolves.toMatchObject({ userId: '11' });
  });

  it('reads Authorization from a Node header record, scheme case-insensitive', async () => {
    const headers = { authorization: `bearer ${token}` };
    await expect(auth.fromRequest({ headers })).resolves.toMatchObject({ userId: '11' });
  });

  it("reads OpenSlides' Authentication: bearer header", async () => {
    await expect(
      auth.fromRequest({ headers: { authentication: `bearer ${token}` } }),
    ).resolves.toMatchObject({ userId: '11' });
    await expect(
      auth.fromRequest({ headers: new Headers({ Authentication: `BEARER ${token}` }) }),
    ).resolves.toMatchObject({ userId: '11' });
  });

  it('reads ?token= from a path or an absolute URL of a stream or WebSocket', async () => {
    await expect(
      auth.fromRequest({ headers: {}, url: `/graphql/stream?token=${token}`, stream: true }),
    ).resolves.toMatchObject({ userId: '11' });
    await expect(
      auth.fromRequest({
        headers: new Headers({ upgrade: 'websocket' }),
        url: new URL(`http://x/ws?a=1&token=${token}`),
      }),
    ).resolves.toMatchObject({ userId: '11' });
    await expect(
      auth.fromRequest({
        headers: { accept: 'text/event-stream' },
        url: `/graphql?token=${token}`,
      }),
    ).resolves.toMatchObject({ userId: '11' });
  });

  it('refuses ?token= on a plain request', async () => {
    for (const headers of [{}, { accept: 'application/json' }]) {
      await expectRefused(
        auth.fromRequest({ headers, url: `/graphql?token=${token}` }),
        /only on SSE and WebSocket/,
        token,
      );
    }
  });

  it('returns null without a token', async () => {
    await expect(auth.fromRequest({ headers: {} })).resolves.toBeNull();
    await expect(auth.fromRequest({ headers: new Headers(), url: '/graphql' })).resolves.toBeNull();
    // Another scheme is not a bearer token (e.g. Basic for a legacy service secret).
    await expect(auth.fromRequest({ headers: { authorization: 'Basic abc' } })).resolves.toBeNull();
  });

  it('throws on a present but invalid token, never anonymous', async () => {
    const bad = `${token.slice(0, -4)}AAAA`;
    await expectRefused(
      auth.fromRequest({ headers: { authorization: `Bearer ${bad}` } }),
      /signature/,
      bad,
    );
    await expectRefused(
      auth.fromRequest({ headers: {}, url: '/x?token=nope', stream: true }),
      /malformed/,
    );
    await expectRefused(auth.fromRequest({ headers: { authorization: 'Bearer' } }), /malformed/);
    await expectRefused(
      auth.fromRequest({ headers: { authorization: [`Bearer ${token}`, `Bearer ${token}`] } }),
      /multiple/,
    );
  });
});

describe('fromConnectionParams', () => {
  const auth = createAuthenticator({ tokenKey: KEY, logger: silent });
  let token: string;
  beforeAll(async () => {
    token = await auth.sign({ sub: '12' });
  });

  it('accepts authorization, Authorization, token and nested headers', async () => {
    for (const params of [
      { authorization: `Bearer ${token}` },
      { Authorization: `bearer ${token}` },
      { token },
      { authorization: token },
      { headers: { Authorization: `Bearer ${token}` } },
    ]) {
      await expect(auth.fromConnectionParams(params)).resolves.toMatchObject({ userId: '12' });
    }
  });

  it('falls back to ?token= on the URL', async () => {
    await expect(auth.fromConnectionParams({}, `/graphql?token=${token}`)).resolves.toMatchObject({
      userId: '12',
    });
    await expect(
      auth.fromConnectionParams(undefined, `/graphql?token=${token}`),
    ).resolves.toMatchObject({ userId: '12' });
  });

  it('returns null without a token', async () => {
    await expect(auth.fromConnectionParams(undefined)).resolves.toBeNull();
    await expect(auth.fromConnectionParams(null, '/graphql')).resolves.toBeNull();
    await expect(auth.fromConnectionParams({ other: 1 })).resolves.toBeNull();
  });

  it('throws on an invalid token', async () => {
    const expired = await signRaw({ sub: '1', exp: now() - 100 });
    await expectRefused(auth.fromConnectionParams({ token: expired }), /expired/, expired);
    await expectRefused(auth.fromConnectionParams({ token: 5 }), /invalid token/);
    await expectRefused(auth.fromConnectionParams({ authorization: 'Bearer a b' }), /malformed/);
  });
});

describe('fake user', () => {
  function capture() {
    const lines: string[] = [];
    const stream = new Writable({
      write(chunk, _encoding, callback) {
        lines.push(String(chunk));
        callback();
      },
    });
    return { lines, logger: createLogger('info', stream) };
  }

  it('warns once at creation and stands in for anonymous requests', async () => {
    const { lines, logger } = capture();
    const auth = createAuthenticator({ tokenKey: KEY, fakeUser: '99', logger });
    expect(lines).toHaveLength(1);
    const entry = JSON.parse(lines[0] ?? '{}') as { level: number; msg: string };
    expect(entry.level).toBe(40);
    expect(entry.msg).toMatch(/development only/i);

    const fake = { userId: '99', group: null, isService: false, expiresAt: null };
    await expect(auth.fromRequest({ headers: {} })).resolves.toEqual(fake);
    await expect(auth.fromConnectionParams({})).resolves.toEqual(fake);
    expect(lines).toHaveLength(1);
  });

  it('lets a real token win, and still refuses a bad one', async () => {
    const auth = createAuthenticator({ tokenKey: KEY, fakeUser: '99', logger: silent });
    const token = await auth.sign({ sub: '5' });
    await expect(
      auth.fromRequest({ headers: { authorization: `Bearer ${token}` } }),
    ).resolves.toMatchObject({ userId: '5' });
    await expectRefused(auth.fromConnectionParams({ token: 'garbage' }), /malformed/);
  });
});

describe('token CLI', () => {
  function runCli(args: string[], env: Record<string, string>) {
    const childEnv: NodeJS.ProcessEnv = { ...process.env, ...env };
    for (const name of ['AUTH_TOKEN_KEY', 'AUTH_TOKEN_KEY_FILE', 'AUTH_ISSUER', 'AUTH_AUDIENCE']) {
      if (!(name in env)) delete childEnv[name];
    }
    return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      execFile(
        process.execPath,
        ['--import', 'tsx', 'scripts/token.ts', ...args],
        { cwd: ROOT, env: childEnv, timeout: 20_000 },
        (error, stdout, stderr) => {
          const code = error === null ? 0 : typeof error.code === 'number' ? error.code : null;
          resolve({ code, stdout, stderr });
        },
      );
    });
  }

  const auth = createAuthenticator({ tokenKey: KEY, logger: silent });

  it('prints a token signed with AUTH_TOKEN_KEY', async () => {
    const result = await runCli(['--sub', '5', '--group', 'g', '--service', '--ttl', '15m'], {
      AUTH_TOKEN_KEY: KEY,
    });
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+\n$/);
    const viewer = await auth.verify(result.stdout.trim());
    expect(viewer).toMatchObject({ userId: '5', group: 'g', isService: true });
    expect((viewer.expiresAt ?? 0) - Date.now()).toBeGreaterThan(14 * 60_000);
    expect((viewer.expiresAt ?? 0) - Date.now()).toBeLessThanOrEqual(15 * 60_000 + 1000);
  }, 25_000);

  it('reads AUTH_TOKEN_KEY_FILE, trimmed', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'switchboard-token-'));
    try {
      const file = join(dir, 'key');
      writeFileSync(file, `  ${KEY}\n`);
      const result = await runCli(['--sub', '8'], { AUTH_TOKEN_KEY_FILE: file });
      expect(result.code).toBe(0);
      await expect(auth.verify(result.stdout.trim())).resolves.toMatchObject({ userId: '8' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 25_000);

  it('exits 2 naming the env var when no key is configured', async () => {
    const result = await runCli(['--sub', '5'], {});
    expect(result.code).toBe(2);
    expect(result.stdout).toBe('');
    expect(result.stderr).toMatch(/AUTH_TOKEN_KEY/);
  }, 25_000);

  it('exits 2 on bad arguments', async () => {
    const missingSub = await runCli([], { AUTH_TOKEN_KEY: KEY });
    expect(missingSub.code).toBe(2);
    expect(missingSub.stderr).toMatch(/--sub/);
    const badTtl = await runCli(['--sub', '1', '--ttl', '1w'], { AUTH_TOKEN_KEY: KEY });
    expect(badTtl.code).toBe(2);
    expect(badTtl.stderr).toMatch(/--ttl/);
  }, 25_000);
});
