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

describe('in a real browser (Chromium)', () => {
  const { a, b } = useInstances({ APPLAUSE_INTERVAL_MS: '200', APPLAUSE_WINDOW_S: '60' });

  it('GraphiQL runs a notify subscription and shows a message published by the test', async () => {
    const token = await a.token('graphiql-user');
    const page = await context.newPage();
    const errors = watchErrors(page);
    const query =
      'subscription Watch {\n  notify {\n    __typename\n    ... on NotifyChannel { channelId }\n' +
      '    ... on NotifyMessage { senderUserId name message }\n  }\n}\n';
    await page.goto(`${a.url}/graphql?query=${encodeURIComponent(query)}`);
    try {
      await page.locator('.graphiql-container').first().waitFor();
    } catch (error) {
      throw new Error(`GraphiQL did not render: ${errors.join('; ')}`, { cause: error });
    }

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
        await page.screenshot({ path: join(ARTIFACTS, 'graphiql-failure.png') });
        throw error;
      });
    const channelId = /"channelId": "([^"]+)"/.exec(await resultText())?.[1];
    expect(channelId).toMatch(/:graphiql-user:/);

    // Published on the other instance: it travels through Redis to the browser's socket.
    const sender = await b.token('graphiql-sender');
    const published = await gql(
      b.url,
      PublishDocument,
      {
        input: {
          channelId: 'AAAAAAAA:graphiql-sender:1',
          name: 'hello-from-the-test',
          message: { text: 'Shown in GraphiQL' },
          toChannels: [channelId as string],
        },
      },
      sender,
    );
    expect(published.body.errors).toBeUndefined();
    await poll(resultText).toContain('hello-from-the-test');
    expect(await resultText()).toContain('"text": "Shown in GraphiQL"');
    await page.screenshot({ path: join(ARTIFACTS, 'graphiql-subscription.png') });
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
