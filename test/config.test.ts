import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, configTable, loadConfig, SETTINGS } from '../src/config.ts';

describe('config', () => {
  it('has a documented default for everything optional and runs with an empty environment', () => {
    const config = loadConfig({});
    expect(config.PORT).toBe(4000);
    // No key: loopback only, where a development key may be generated.
    expect(config.HOST).toBe('127.0.0.1');
    expect(loadConfig({ AUTH_TOKEN_KEY: 'k'.repeat(32) }).HOST).toBe('0.0.0.0');
    expect(config.DATABASE_URL).toBeUndefined();
    expect(config.REDIS_URL).toBeUndefined();
    expect(config.DATA_DIR).toBe('./.data');
    expect(config.GRAPHIQL).toBe(true);
  });

  it('names every invalid variable in one error', () => {
    const attempt = () =>
      loadConfig({
        PORT: 'eighty',
        LOG_LEVEL: 'loud',
        REDIS_URL: 'http://nope',
        TLS_CERT_FILE: 'x',
      });
    expect(attempt).toThrow(ConfigError);
    const message = (() => {
      try {
        attempt();
      } catch (error) {
        return (error as Error).message;
      }
      return '';
    })();
    for (const name of ['PORT', 'LOG_LEVEL', 'REDIS_URL', 'TLS_CERT_FILE and TLS_KEY_FILE']) {
      expect(message).toContain(name);
    }
  });

  it('reads secrets from *_FILE and reports unreadable ones', () => {
    const folder = mkdtempSync(join(tmpdir(), 'switchboard-config-'));
    try {
      const file = join(folder, 'key');
      writeFileSync(file, 'a-secret-that-is-long-enough\n');
      expect(loadConfig({ AUTH_TOKEN_KEY_FILE: file }).AUTH_TOKEN_KEY).toBe(
        'a-secret-that-is-long-enough',
      );
      expect(() => loadConfig({ AUTH_TOKEN_KEY_FILE: join(folder, 'missing') })).toThrow(
        /AUTH_TOKEN_KEY_FILE/,
      );
    } finally {
      rmSync(folder, { recursive: true, force: true });
    }
  });

  it('is documented in docs/configuration.md, every variable (npm run -s config:table -- --write)', () => {
    const readme = readFileSync(new URL('../docs/configuration.md', import.meta.url), 'utf8');
    const block = /<!-- config:start -->\n([\s\S]*)<!-- config:end -->/.exec(readme)?.[1];
    expect(block).toBe(configTable());
    expect(Object.keys(SETTINGS).every((name) => block?.includes(`\`${name}\``))).toBe(true);
  });
});
