import { SignJWT } from 'jose';
import { type App, buildApp } from '../../src/app.ts';
import { loadConfig } from '../../src/config.ts';
import { createLogger } from '../../src/logger.ts';

/** A key every test server signs and verifies with. */
export const TEST_TOKEN_KEY = 'switchboard-test-key-0123456789abcdef';

export interface TestServer {
  app: App;
  /** http://127.0.0.1:<port> */
  url: string;
  /** ws://127.0.0.1:<port>/graphql */
  wsUrl: string;
  token(
    sub: string,
    options?: { group?: string; service?: boolean; ttlSeconds?: number },
  ): Promise<string>;
  stop(): Promise<void>;
}

/**
 * Starts a real server in this process on a free port, with the given settings on top of test
 * defaults (silent logs, the test key). Pass DATABASE_URL (and REDIS_URL for several instances).
 */
export async function startServer(env: Record<string, string | undefined>): Promise<TestServer> {
  const config = loadConfig({
    PORT: '0',
    HOST: '127.0.0.1',
    LOG_LEVEL: 'silent',
    AUTH_TOKEN_KEY: TEST_TOKEN_KEY,
    SHUTDOWN_TIMEOUT_MS: '2000',
    ...env,
  });
  const app = await buildApp({ config, logger: createLogger(config.LOG_LEVEL) });
  const url = await app.start();
  return {
    app,
    url,
    wsUrl: `${url.replace(/^http/, 'ws')}/graphql`,
    token: (sub, options = {}) => app.auth.sign({ sub, ...options }),
    stop: () => app.stop(),
  };
}

/** A token signed with the test key whose `exp` lies `secondsAgo` in the past. */
export function expiredToken(sub: string, secondsAgo = 60): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({})
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject(sub)
    .setIssuedAt(now - secondsAgo - 60)
    .setExpirationTime(now - secondsAgo)
    .sign(new TextEncoder().encode(TEST_TOKEN_KEY));
}
