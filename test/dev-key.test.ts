import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { buildApp } from '../src/app.ts';
import { ConfigError, loadConfig } from '../src/config.ts';
import { createLogger } from '../src/logger.ts';
import { WAIT_MS } from './support/clients.ts';
import { createTestDatabase } from './support/postgres.ts';
import { spawnServer } from './support/process.ts';

const root = fileURLToPath(new URL('..', import.meta.url));

/** Runs src/main.ts with `env` only and resolves its exit code and output (bounded). */
async function runMain(env: Record<string, string>) {
  const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    cwd: root,
    env: { PATH: process.env['PATH'] ?? '', HOME: process.env['HOME'] ?? '', PORT: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const onData = (chunk: Buffer) => {
    output += chunk.toString();
    // A server that starts has failed the test: stop it at once.
    if (output.includes('switchboard listening')) child.kill('SIGKILL');
  };
  child.stdout?.on('data', onData);
  child.stderr?.on('data', onData);
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  const [code] = (await once(child, 'exit')) as [number | null];
  clearTimeout(timer);
  return { code, output };
}

describe('the generated development key', () => {
  const stops: (() => Promise<unknown>)[] = [];
  afterAll(async () => {
    for (const stop of stops.reverse()) await stop();
  });

  it('refuses to start on a non-loopback HOST without a key, naming AUTH_TOKEN_KEY', async () => {
    const { code, output } = await runMain({ HOST: '0.0.0.0' });
    expect(code).not.toBe(0);
    expect(output).toContain('AUTH_TOKEN_KEY');
    expect(output).not.toContain('switchboard listening');
    expect(() => loadConfig({ HOST: '192.0.2.1' })).toThrow(/AUTH_TOKEN_KEY/);
    expect(() => loadConfig({ HOST: '::' })).toThrow(ConfigError);
  });

  it('is never generated with NODE_ENV=production, even on loopback', async () => {
    const { code, output } = await runMain({
      HOST: '127.0.0.1',
      NODE_ENV: 'production',
    });
    expect(code).not.toBe(0);
    expect(output).toMatch(/AUTH_TOKEN_KEY.*NODE_ENV=production/);
    expect(() => loadConfig({ HOST: '127.0.0.1', NODE_ENV: 'production' })).toThrow(
      /AUTH_TOKEN_KEY/,
    );
  });

  it('cannot be had by bypassing the configuration check either', async () => {
    const config = { ...loadConfig({ HOST: '127.0.0.1' }), HOST: '0.0.0.0' };
    await expect(buildApp({ config, logger: createLogger('silent') })).rejects.toThrow(
      /AUTH_TOKEN_KEY/,
    );
  });

  it('exists on loopback only: no HOST and no key listen on 127.0.0.1 with /demo/token', async () => {
    const config = loadConfig({ AUTH_TOKEN_KEY: undefined });
    expect(config.HOST).toBe('127.0.0.1');
    expect(loadConfig({ AUTH_TOKEN_KEY: 'k'.repeat(32) }).HOST).toBe('0.0.0.0');

    const db = await createTestDatabase();
    stops.push(() => db.drop());
    const server = await spawnServer({ HOST: '127.0.0.1', DATABASE_URL: db.url });
    stops.push(() => server.stop());
    const response = await fetch(`${server.url}/demo/token?user=u1`, {
      signal: AbortSignal.timeout(WAIT_MS),
    });
    expect(response.status).toBe(200);
  });

  it('answers 404 for /demo/token with a configured key, on any HOST', async () => {
    const db = await createTestDatabase();
    stops.push(() => db.drop());
    const server = await spawnServer({
      HOST: '0.0.0.0',
      AUTH_TOKEN_KEY: 'a-configured-key-0123456789abcdef',
      DATABASE_URL: db.url,
    });
    stops.push(() => server.stop());
    const response = await fetch(`${server.url}/demo/token?user=u1`, {
      signal: AbortSignal.timeout(WAIT_MS),
    });
    expect(response.status).toBe(404);
  });
});
