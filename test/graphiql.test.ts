import { describe, expect, it } from 'vitest';
import { pickEncoding } from '../src/transport/graphiql.ts';
import { useInstances } from './support/instances.ts';

/** The first asset the page links (its script), read from the page. */
async function scriptOf(base: string): Promise<string> {
  const page = await fetch(`${base}/graphql`, { headers: { accept: 'text/html' } });
  expect(page.status).toBe(200);
  const path = /<script defer src="([^"]+)"/.exec(await page.text())?.[1];
  expect(path).toMatch(/^\/graphiql\/graphiql\.[0-9a-f]{16}\.js$/);
  return path as string;
}

describe('GraphiQL page and assets (HTTP)', () => {
  const { a } = useInstances({}, 1, { redis: false });
  const { a: off } = useInstances({ GRAPHIQL: 'false' }, 1, { redis: false });

  it('serves a small page that names its assets and keeps no cache of itself', async () => {
    const page = await fetch(`${a.url}/graphql`, { headers: { accept: 'text/html' } });
    expect(page.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(page.headers.get('cache-control')).toBe('no-cache');
    expect(page.headers.get('content-security-policy')).toContain("script-src 'self'");
    const html = await page.text();
    expect(html.length).toBeLessThan(4096);
    expect(html).not.toMatch(/<script>/);
    expect(html).toMatch(/"subscriptionsProtocol":"GRAPHQL_SSE"/);
    const ws = await fetch(`${a.url}/graphql?subscriptions=ws`, {
      headers: { accept: 'text/html' },
    });
    expect(await ws.text()).toMatch(/"subscriptionsProtocol":"WS"/);
  });

  it('sends brotli, gzip or plain bytes by Accept-Encoding, immutable, and the same content', async () => {
    const path = await scriptOf(a.url);
    const bodies = new Map<string, number>();
    for (const [accept, encoding] of [
      ['gzip, deflate, br', 'br'],
      ['gzip', 'gzip'],
      ['identity', null],
      ['br;q=0, gzip', 'gzip'],
    ] as const) {
      // fetch decodes what it accepts; the raw length is content-length.
      const response = await fetch(`${a.url}${path}`, { headers: { 'accept-encoding': accept } });
      expect([accept, response.status]).toEqual([accept, 200]);
      expect(response.headers.get('content-encoding')).toBe(encoding);
      expect(response.headers.get('cache-control')).toBe('public, max-age=31536000, immutable');
      expect(response.headers.get('vary')).toBe('accept-encoding');
      expect(response.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
      bodies.set(accept, (await response.arrayBuffer()).byteLength);
      bodies.set(`${accept}:sent`, Number(response.headers.get('content-length')));
    }
    // Decoded, every encoding is the same script; compressed, it is far smaller.
    expect(new Set([...bodies].filter(([k]) => !k.endsWith(':sent')).map(([, v]) => v)).size).toBe(
      1,
    );
    expect(bodies.get('gzip, deflate, br:sent')).toBeLessThan((bodies.get('identity') ?? 0) / 3);

    const head = await fetch(`${a.url}${path}`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(await head.text()).toBe('');
    expect((await fetch(`${a.url}${path}`, { method: 'POST' })).status).toBe(405);
  });

  it('answers 404 for anything the manifest does not list', async () => {
    for (const path of [
      '/graphiql/nothing.0123456789abcdef.js',
      '/graphiql/manifest.json',
      '/graphiql/../../config.ts',
      '/graphiql/%2e%2e%2fmanifest.json',
      '/graphiql/',
    ]) {
      const response = await fetch(`${a.url}${path}`);
      expect([path, response.status]).toEqual([path, 404]);
    }
  });

  it('with GRAPHIQL=false, /graphql is only the API', async () => {
    const page = await fetch(`${off.url}/graphql`, { headers: { accept: 'text/html' } });
    expect(page.headers.get('content-type') ?? '').not.toContain('text/html');
    expect(await page.text()).not.toContain('<html');
    const response = await fetch(
      `${off.url}/graphql?query=${encodeURIComponent('{ __typename }')}`,
      {
        headers: { accept: 'application/json' },
      },
    );
    expect(await response.json()).toEqual({ data: { __typename: 'Query' } });
  });

  it('picks brotli, then gzip, honouring q=0', () => {
    expect(pickEncoding(undefined)).toBeNull();
    expect(pickEncoding('')).toBeNull();
    expect(pickEncoding('gzip, br')).toBe('br');
    expect(pickEncoding('BR;q=0.5')).toBe('br');
    expect(pickEncoding('br;q=0, gzip;q=1')).toBe('gzip');
    expect(pickEncoding('deflate')).toBeNull();
  });
});
