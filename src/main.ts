import { buildApp } from './app.ts';
import { ConfigError, loadConfig } from './config.ts';
import { createLogger } from './logger.ts';

/** Process entry: config -> app -> listen; SIGTERM/SIGINT shut down gracefully. */
async function main(): Promise<void> {
  let config: ReturnType<typeof loadConfig>;
  try {
    config = loadConfig();
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`${error.message}\n`);
      process.exit(2);
    }
    throw error;
  }
  const logger = createLogger(config.LOG_LEVEL);
  process.on('unhandledRejection', (reason) => {
    logger.error({ err: reason }, 'unhandled promise rejection');
  });

  const app = await buildApp({ config, logger });
  const url = await app.start();
  if (app.auth.generatedKey) {
    const [user, service] = await Promise.all([
      app.auth.sign({ sub: '1', ttlSeconds: 86_400 }),
      app.auth.sign({ sub: 'service', service: true, ttlSeconds: 86_400 }),
    ]);
    logger.warn(
      'No AUTH_TOKEN_KEY or AUTH_JWKS_URL is set: a random key was generated for this process only. ' +
        'Tokens below are valid for 24 hours or until restart; set AUTH_TOKEN_KEY for stable tokens.',
    );
    process.stdout.write(
      `\n  Development tokens (Authorization: Bearer <token>):\n` +
        `    user 1:  ${user}\n    service: ${service}\n` +
        `  Try: curl -s ${url}/graphql -H 'content-type: application/json' ` +
        `-H 'authorization: Bearer ${user}' -d '{"query":"{ viewer { userId } }"}'\n\n`,
    );
  }

  logger.info(
    {
      url,
      graphql: `${url}/graphql`,
      database: app.db.embedded ? 'embedded' : 'postgres',
      pubsub: app.pubsub.kind,
      redis: config.REDIS_CLUSTER_NODES ? 'cluster' : config.REDIS_URL ? 'single' : 'none',
    },
    'switchboard listening',
  );
  if (config.REDIS_CLUSTER_NODES && config.REDIS_URL) {
    logger.warn('REDIS_CLUSTER_NODES and REDIS_URL are both set: REDIS_URL is not used');
  }
  let signals = 0;
  const shutdown = (signal: NodeJS.Signals) => {
    signals += 1;
    if (signals > 1) {
      logger.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    logger.info({ signal }, 'shutting down');
    const force = setTimeout(() => {
      logger.error('shutdown timed out');
      process.exit(1);
    }, config.SHUTDOWN_TIMEOUT_MS + 2_000);
    force.unref();
    app.stop().then(
      () => {
        logger.info('stopped');
        process.exit(0);
      },
      (error: unknown) => {
        logger.error({ err: error }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
}

main().catch((error: unknown) => {
  process.stderr.write(`switchboard failed to start: ${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
