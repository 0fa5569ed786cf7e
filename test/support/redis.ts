import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';

/** The Redis the tests use: REDIS_URL, or the local default. */
export const TEST_REDIS_URL = process.env['TEST_REDIS_URL'] ?? 'redis://127.0.0.1:6379';

/**
 * Checks that the test Redis answers and returns its URL with a fresh key prefix, so tests that
 * run at the same time never see each other's events. Fails loudly when Redis is missing.
 */
export async function requireRedis(): Promise<{ url: string; prefix: string }> {
  const client = new Redis(TEST_REDIS_URL, {
    lazyConnect: true,
    connectTimeout: 2_000,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  try {
    await client.connect();
    await client.ping();
  } catch (error) {
    throw new Error(
      `Redis is required for this test and is not reachable at ${TEST_REDIS_URL} ` +
        `(${(error as Error).message}). Start it: redis-server --daemonize yes --port 6379 --save "" --appendonly no`,
    );
  } finally {
    client.disconnect();
  }
  return { url: TEST_REDIS_URL, prefix: `sbtest:${randomBytes(6).toString('hex')}:` };
}
