import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type BrowserContext, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PublishDocument } from './generated/graphql.ts';
import { gql } from './support/clients.ts';
import { useInstances } from './support/instances.ts';

/** Debian's Chromium (`apt-get install chromium`; .ci/run installs it). Never downloaded. */
const CHROMIUM = '/usr/bin/chromium';
const ARTIFACTS = fileURLToPath(new URL('../test-artifacts/', import.meta.url));
/** Bound of every wait on the page. */
const PAGE_WAIT_MS = 15_000;

/** A bounded poll of something on a page (vitest's expect.poll). */
const poll = <T>(read: () => Promise<T> | T) =>
  expect.poll(read, { timeout: PAGE_WAIT_MS, interval: 50 });

let context: BrowserContext;
let profile: string;

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) {
    throw new Error(
      `Chromium is missing at ${CHROMIUM}. Install Debian's package: ` +
        'apt-get update && apt-get install -y --no-install-recommends chromium (.ci/run does this)',
    );
  }
  mkdirSync(ARTIFACTS, { recursive: true });
  profile = mkdtempSync(join(tmpdir(), 'switchboard-chromium-'));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    viewport: { width: 1360, height: 860 },
    timeout: 30_000,
  });
  context.setDefaultTimeout(PAGE_WAIT_MS);
});

afterAll(async () => {
  await context?.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

/** Collects the page's console errors, to show them when a wait fails. */
function watchErrors(page: Page): string[] {
  const errors: string[] = [];
  page.on('pageerror', (error) => errors.push(error.message));
  page.on('console', (message) => {
    if (message.type() === 'error') errors.push(message.text());
  });
  page.on('requestfailed', (request) => errors.push(`failed: ${request.url()}`));
  return errors;
}

/** What Chromium saw of one response (Chrome DevTools Protocol, Network domain). */
interface SeenResponse {
  url: string;
  status: number;
  headers: Record<string, string>;
  /** Bytes that came over the network for it (headers and encoded body); 0 from the cache. */
  transferredBytes: number;
  /** The encoded body's bytes (compressed, as sent). */
  bodyBytes: number;
  /** The decoded body's bytes. */
  decodedBytes: number;
  fromCache: boolean;
}

/**
 * Watches a page's network through CDP: `requests` (url and Accept of every request, WebSockets
 * included) as they happen, and `settled()`, the responses finished so far once the network has
 * been quiet for a moment (bounded).
 */
async function watchNetwork(page: Page) {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Network.enable');
  const pending = new Map<string, SeenResponse>();
  const done: SeenResponse[] = [];
  const requests: { url: string; accept: string | undefined }[] = [];
  let lastActivity = Date.now();
  cdp.on('Network.requestWillBeSent', (event) => {
    lastActivity = Date.now();
    const headers = Object.fromEntries(
      Object.entries(event.request.headers).map(([k, v]) => [k.toLowerCase(), String(v)]),
    );
    requests.push({ url: event.request.url, accept: headers['accept'] });
  });
  cdp.on('Network.webSocketCreated', (event) => {
    requests.push({ url: event.url, accept: undefined });
  });
  cdp.on('Network.responseReceived', (event) => {
    lastActivity = Date.now();
    const { response } = event;
    pending.set(event.requestId, {
      url: response.url,
      status: response.status,
      headers: Object.fromEntries(
        Object.entries(response.headers).map(([k, v]) => [k.toLowerCase(), String(v)]),
      ),
      transferredBytes: 0,
      bodyBytes: 0,
      decodedBytes: 0,
      fromCache: Boolean(response.fromDiskCache || response.fromPrefetchCache),
    });
  });
  const servedFromCache = new Set<string>();
  cdp.on('Network.requestServedFromCache', (event) => {
    servedFromCache.add(event.requestId);
  });
  cdp.on('Network.dataReceived', (event) => {
    lastActivity = Date.now();
    const seen = pending.get(event.requestId);
    if (seen) seen.decodedBytes += event.dataLength;
  });
  cdp.on('Network.loadingFinished', (event) => {
    lastActivity = Date.now();
    const seen = pending.get(event.requestId);
    if (!seen) return;
    pending.delete(event.requestId);
    if (servedFromCache.has(event.requestId)) seen.fromCache = true;
    seen.transferredBytes = seen.fromCache ? 0 : event.encodedDataLength;
    const length = Number(seen.headers['content-length']);
    seen.bodyBytes = Number.isFinite(length) ? length : event.encodedDataLength;
    if (seen.fromCache) seen.bodyBytes = 0;
    done.push(seen);
  });
  return {
    requests,
    /** The finished responses once nothing happened for 500 ms (at most PAGE_WAIT_MS). */
    async settled(): Promise<SeenResponse[]> {
      await poll(() => Date.now() - lastActivity > 500).toBe(true);
      return [...done];
    },
  };
}

describe('in a real browser (Chromium)', () => {
  const { a, b } = useInstances({ APPLAUSE_INTERVAL_MS: '200', APPLAUSE_WINDOW_S: '60' });

  /** Largest GraphiQL page (the HTML document itself; its assets are separate files). */
  const PAGE_MAX_BYTES = 200 * 1024;

  /**
   * Opens GraphiQL (`/graphql` plus `search`), runs a notify subscription with a token pasted into
   * the headers tab, and waits for a message published by the test on the other instance.
   * Returns what went over the network while the page loaded, from Chromium's own accounting.
   */
  async function notifyInGraphiQL(search: string, name: string, token: string) {
    const page = await context.newPage();
    const errors = watchErrors(page);
    const network = await watchNetwork(page);
    // GraphiQL keeps its tabs and headers in localStorage: every visit starts afresh.
    await page.addInitScript(() => localStorage.clear());
    const query =
      'subscription Watch {\n  notify {\n    __typename\n    ... on NotifyChannel { channelId }\n' +
      '    ... on NotifyMessage { senderUserId name message }\n  }\n}\n';
    await page.goto(`${a.url}/graphql?${search}query=${encodeURIComponent(query)}`);
    try {
      await page.locator('.graphiql-container').first().waitFor();
    } catch (error) {
      throw new Error(`GraphiQL did not render: ${errors.join('; ')}`, { cause: error });
    }
    const loaded = network.settled();

    // The token goes into GraphiQL's headers editor, as a user would paste it.
    await page.getByRole('button', { name: /^headers$/i }).click();
    const headers = page.locator('.graphiql-editor-tool .graphiql-editor').last();
    await headers.click();
    await page.keyboard.press('ControlOrMeta+A');
    await page.keyboard.insertText(JSON.stringify({ Authorization: `Bearer ${token}` }));

    await page.locator('.graphiql-execute-button').click();
    // Monaco renders spaces as no-break spaces; compare with plain ones.
    const resultText = async () =>
      (await page.locator('.result-window').innerText()).replace(/\s+/g, ' ');
    await poll(resultText)
      .toContain('channelId')
      .catch(async (error: unknown) => {
        await page.screenshot({ path: join(ARTIFACTS, `graphiql-${name}-failure.png`) });
        throw new Error(`no channel id; page errors: ${errors.join('; ')}`, { cause: error });
      });
    const channelId = /"channelId": "([^"]+)"/.exec(await resultText())?.[1];
    expect(channelId).toMatch(/:graphiql-user:/);

    // Published on the other instance: it travels through Redis to the browser's stream.
    const sender = await b.token('graphiql-sender');
    const published = await gql(
      b.url,
      PublishDocument,
      {
        input: {
          channelId: 'AAAAAAAA:graphiql-sender:1',
          name: `hello-over-${name}`,
          message: { text: 'Shown in GraphiQL' },
          toChannels: [channelId as string],
        },
      },
      sender,
    );
    expect(published.body.errors).toBeUndefined();
    await poll(resultText).toContain(`hello-over-${name}`);
    expect(await resultText()).toContain('"text": "Shown in GraphiQL"');
    await page.screenshot({ path: join(ARTIFACTS, `graphiql-${name}.png`) });
    // No script error and no Content-Security-Policy violation on the way.
    expect(errors).toEqual([]);
    return { page, loaded: await loaded, requests: network.requests };
  }

  it('GraphiQL: a small page, compressed and immutable assets from this server; a notify subscription over graphql-sse', async () => {
    const first = await notifyInGraphiQL('', 'sse', await a.token('graphiql-user'));
    // The subscription went to the graphql-sse server at /graphql itself.
    expect(
      first.requests.some(
        (r) => r.url.startsWith(`${a.url}/graphql`) && r.accept === 'text/event-stream',
      ),
    ).toBe(true);
    const { loaded } = first;
    const origin = new URL(a.url).origin;
    // Nothing from another host.
    expect(loaded.filter((r) => !r.url.startsWith(origin) && !/^(data|blob):/.test(r.url))).toEqual(
      [],
    );
    const document = loaded.find((r) => new URL(r.url).pathname === '/graphql');
    expect(document?.status).toBe(200);
    expect(document?.bodyBytes).toBeGreaterThan(0);
    expect(document?.bodyBytes).toBeLessThanOrEqual(PAGE_MAX_BYTES);
    const assets = loaded.filter((r) => new URL(r.url).pathname.startsWith('/graphiql/'));
    // Script, style sheet, icon and Monaco's workers.
    expect(assets.length).toBeGreaterThanOrEqual(3);
    for (const asset of assets) {
      expect([asset.url, asset.status]).toEqual([asset.url, 200]);
      expect(new URL(asset.url).pathname).toMatch(/^\/graphiql\/[\w.-]+\.[0-9a-f]{16}\.\w+$/);
      expect([asset.url, asset.headers['content-encoding']]).toEqual([
        asset.url,
        expect.stringMatching(/^(br|gzip)$/),
      ]);
      expect(asset.headers['cache-control']).toBe('public, max-age=31536000, immutable');
    }
    const total = loaded.reduce((sum, r) => sum + r.transferredBytes, 0);
    const uncompressed = loaded.reduce((sum, r) => sum + r.decodedBytes, 0);
    console.log(
      `GraphiQL first visit: page ${document?.bodyBytes} B, ${loaded.length} responses, ` +
        `${total} B transferred (${uncompressed} B decoded)`,
    );
    // Far below the 8.8 MB the inlined page weighed.
    expect(total).toBeLessThan(uncompressed / 2);

    // A second visit takes every asset from the browser's cache: only the page travels.
    const again = await watchNetwork(first.page);
    await first.page.goto(`${a.url}/graphql`);
    await first.page.locator('.graphiql-container').first().waitFor();
    const reloaded = await again.settled();
    const fetched = reloaded.filter(
      (r) => new URL(r.url).pathname.startsWith('/graphiql/') && !r.fromCache,
    );
    expect(fetched.map((r) => r.url)).toEqual([]);
    const secondTotal = reloaded.reduce((sum, r) => sum + r.transferredBytes, 0);
    console.log(`GraphiQL second visit: ${secondTotal} B transferred`);
    expect(secondTotal).toBeLessThanOrEqual(PAGE_MAX_BYTES);
    await first.page.close();
  });

  // GraphiQL does not send its headers tab over graphql-ws; the page's ?token= is its
  // connection_init payload (the headers tab is filled too, as for SSE, and is not what counts).
  it('GraphiQL runs a notify subscription over graphql-ws (/graphql?subscriptions=ws&token=)', async () => {
    const token = await a.token('graphiql-user');
    const { page, requests } = await notifyInGraphiQL(
      `subscriptions=ws&token=${token}&`,
      'ws',
      token,
    );
    expect(requests.some((r) => r.url.startsWith(`${a.url.replace(/^http/, 'ws')}/graphql`))).toBe(
      true,
    );
    await page.close();
  });

  it('/demo: two people applaud on two instances and both meters rise', async () => {
    const [ada, grace] = await Promise.all([
      a.token('ada', { group: 'demo' }),
      b.token('grace', { group: 'demo' }),
    ]);
    const meeting = `demo-${Date.now()}`;
    const open = async (url: string, token: string) => {
      const page = await context.newPage();
      const errors = watchErrors(page);
      await page.goto(`${url}/demo?meeting=${meeting}&token=${token}`);
      await page.locator('#board').waitFor();
      await poll(() => page.locator('#link-state').innerText()).toBe('live');
      return { page, errors };
    };
    const first = await open(a.url, ada);
    const second = await open(b.url, grace);
    const level = (page: Page) => page.locator('#applause-level').innerText();
    const present = (page: Page) => page.locator('#applause-present').innerText();
    for (const { page } of [first, second]) {
      await poll(() => present(page)).toBe('2');
      expect(await level(page)).toBe('0');
    }

    await first.page.locator('#applause-button').click();
    for (const { page } of [first, second]) await poll(() => level(page)).toBe('1');
    await second.page.locator('#applause-button').click();
    for (const { page } of [first, second]) await poll(() => level(page)).toBe('2');

    // The rest of the page is live too: a notify message and a chat message cross instances.
    await first.page.locator('#notify-text').fill('Welcome to the demo');
    await first.page.locator('#notify-text').press('Enter');
    await poll(() => second.page.locator('#notify-log').innerText()).toContain('Welcome');
    await second.page.locator('#chat-peers button', { hasText: 'ada' }).click();
    await second.page.locator('#chat-text').fill('Hi Ada!');
    await second.page.locator('#chat-text').press('Enter');
    await poll(() => first.page.locator('#chat-log').innerText()).toContain('Hi Ada!');
    await poll(() => first.page.locator('#presence-list li[data-status="ACTIVE"]').count()).toBe(2);

    // The ring is full (2 of 2 present applaud) once its transition ran in the front tab.
    await first.page.bringToFront();
    const fill = () =>
      first.page.evaluate(() =>
        getComputedStyle(document.getElementById('meter') as HTMLElement).getPropertyValue(
          '--fill',
        ),
      );
    await poll(fill).toBe('1');
    await first.page.screenshot({ path: join(ARTIFACTS, 'demo.png'), fullPage: true });
    expect([...first.errors, ...second.errors]).toEqual([]);
    await Promise.all([first.page.close(), second.page.close()]);
  });
});

describe('/demo tokens', () => {
  // No AUTH_TOKEN_KEY: the server generates its key (development) and offers demo tokens.
  const { a: dev } = useInstances({ AUTH_TOKEN_KEY: undefined }, 1, { redis: false });
  const { a: configured } = useInstances({}, 1, { redis: false });

  it('hands out tokens only when the server generated its own key', async () => {
    const ok = await fetch(`${dev.url}/demo/token?user=linus`);
    expect(ok.status).toBe(200);
    const { token, userId } = (await ok.json()) as { token: string; userId: string };
    expect(userId).toBe('linus');
    expect(await dev.app.auth.verify(token)).toMatchObject({ userId: 'linus', group: 'demo' });
    expect((await fetch(`${dev.url}/demo/token?user=${'x'.repeat(65)}`)).status).toBe(400);
    expect((await fetch(`${dev.url}/demo/token?user=a%20b`)).status).toBe(400);
    expect((await fetch(`${configured.url}/demo/token?user=linus`)).status).toBe(404);
    expect((await fetch(`${configured.url}/demo/token`, { method: 'POST' })).status).toBe(405);
    const page = await fetch(`${configured.url}/demo`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-security-policy')).toContain("default-src 'none'");
  });

  it('opens as a development user without a token, and asks for one with a configured key', async () => {
    const page = await context.newPage();
    await page.goto(`${dev.url}/demo?user=linus`);
    await poll(() => page.locator('#me').innerText()).toBe('linus');
    await poll(() => page.locator('#link-state').innerText()).toBe('live');
    await page.goto(`${configured.url}/demo`);
    await page.locator('#auth-needed').waitFor();
    expect(await page.locator('#board').isHidden()).toBe(true);
    await page.close();
  });
});

describe('/demo sessions', () => {
  // Demo tokens live 8 hours; a warning time longer than that warns at once, so the page
  // refreshes its token as soon as it is live.
  const { a: dev } = useInstances(
    { AUTH_TOKEN_KEY: undefined, TOKEN_EXPIRY_WARNING_S: '30000' },
    1,
    { redis: false },
  );

  it('refreshes its token on the open socket, and resumes chat after a reconnect', async () => {
    const ada = await context.newPage();
    const errors = watchErrors(ada);
    await ada.goto(`${dev.url}/demo?user=ada&users=ada,grace`);
    await poll(() => ada.locator('#link-state').innerText()).toBe('live');
    await poll(() => ada.locator('#session-state').innerText()).toContain('session refreshed');
    // Still the one socket it started with: refreshed in-band, not reconnected.
    expect(dev.app.connections.forUser('ada')).toHaveLength(1);

    // The socket drops (the server goes away from under it, 1001); a message is sent while
    // Ada has no connection at all; after the page reconnects, the chat resumes with it.
    const grace = (
      (await (await fetch(`${dev.url}/demo/token?user=grace`)).json()) as {
        token: string;
      }
    ).token;
    const [connection] = dev.app.connections.forUser('ada');
    connection?.close(1001, 'test: going away');
    const sent = await gql(
      dev.url,
      'mutation ($to: ID!) { sendChatMessage(to: $to, text: "while you were away") { id } }',
      { to: 'ada' },
      grace,
    );
    expect(sent.body.errors).toBeUndefined();
    expect(dev.app.connections.forUser('ada')).toHaveLength(0);
    await poll(() => ada.locator('#link-state').innerText()).toBe('live');
    await poll(() => ada.locator('#chat-log').innerText()).toContain('while you were away');
    expect(errors).toEqual([]);
    await ada.close();
  });
});
