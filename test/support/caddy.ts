import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { accessSync, constants, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll } from 'vitest';
import { WAIT_MS } from './clients.ts';

/** The repository's Caddyfile: run as it is, only its environment placeholders are set. */
export const CADDYFILE = fileURLToPath(new URL('../../deploy/Caddyfile', import.meta.url));

/** Bound of Caddy's start (it adapts the Caddyfile and opens its listener). */
const START_TIMEOUT_MS = 15_000;
/** Bound of Caddy's graceful stop before it is killed (above the Caddyfile's grace_period). */
const STOP_TIMEOUT_MS = 10_000;

type LogEntry = Record<string, unknown>;

/** A running Caddy in front of some instances. */
export interface CaddyProxy {
  /** http://127.0.0.1:<port> */
  readonly url: string;
  /** ws://127.0.0.1:<port>/graphql */
  readonly wsUrl: string;
  /** Everything Caddy logged so far (to explain a failed test). */
  output(): string;
  /**
   * Resolves with the first JSON log entry Caddy writes from now on that `match` accepts;
   * rejects after `timeoutMs`, showing the log.
   */
  logged(match: (entry: LogEntry) => boolean, timeoutMs?: number): Promise<LogEntry>;
  /** Stops Caddy (SIGTERM, SIGKILL after a bound) and removes its directory. Idempotent. */
  stop(): Promise<void>;
}

/** The `caddy` executable on PATH; throws, naming the install command, when there is none. */
export function requireCaddy(): string {
  for (const dir of (process.env['PATH'] ?? '').split(delimiter)) {
    if (dir === '') continue;
    const candidate = join(dir, 'caddy');
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {}
  }
  throw new Error(
    "Caddy is required for this test and is not on PATH. Install Debian's package: " +
      'apt-get update && apt-get install -y --no-install-recommends caddy (.ci/run does this)',
  );
}

/**
 * The JSON config Caddy makes of the repository's Caddyfile (`caddy adapt`), with only `env`
 * (and PATH) in its environment: without SWITCHBOARD_* variables, the Caddyfile's defaults.
 */
export async function adaptCaddyfile(env: Record<string, string> = {}): Promise<unknown> {
  const { stdout } = await promisify(execFile)(
    requireCaddy(),
    ['adapt', '--config', CADDYFILE, '--adapter', 'caddyfile'],
    { env: { PATH: process.env['PATH'] ?? '', ...env }, timeout: WAIT_MS },
  );
  return JSON.parse(stdout) as unknown;
}

/** A TCP port that was free on 127.0.0.1 a moment ago. */
async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  await new Promise((resolve) => server.close(resolve));
  if (address === null || typeof address === 'string') throw new Error('no port');
  return address.port;
}

/** Parses a log line; null when it is not a JSON object (Caddy logs JSON when not on a TTY). */
function parseEntry(line: string): LogEntry | null {
  try {
    const value = JSON.parse(line) as unknown;
    return typeof value === 'object' && value !== null ? (value as LogEntry) : null;
  } catch {
    return null;
  }
}

/**
 * Starts `caddy run` with the repository's Caddyfile in front of `upstreams` (host:port each) on
 * a free port, with its admin endpoint off and its data and config in a fresh temporary
 * directory, and resolves once a request through it reached an instance (/readyz answered 200).
 * Fails loudly when Caddy is not installed; a failed start stops Caddy again.
 */
export async function startCaddy(upstreams: readonly string[]): Promise<CaddyProxy> {
  const caddy = requireCaddy();
  const port = await freePort();
  const home = mkdtempSync(join(tmpdir(), 'switchboard-caddy-'));
  const child = spawn(caddy, ['run', '--config', CADDYFILE, '--adapter', 'caddyfile'], {
    env: {
      PATH: process.env['PATH'] ?? '',
      // Caddy keeps its autosave and certificates under these: never the user's own.
      HOME: home,
      XDG_CONFIG_HOME: join(home, 'config'),
      XDG_DATA_HOME: join(home, 'data'),
      // The Caddyfile's placeholders. A site address names no interface, so Caddy accepts on
      // every one, for as long as the suite runs.
      SWITCHBOARD_PROXY_ADDRESS: `:${port}`,
      SWITCHBOARD_UPSTREAMS: upstreams.join(' '),
      SWITCHBOARD_PROXY_ADMIN: 'off',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });

  let output = '';
  let partial = '';
  const watchers = new Set<(entry: LogEntry) => void>();
  const append = (chunk: Buffer) => {
    const text = chunk.toString();
    output += text;
    const lines = (partial + text).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      const entry = parseEntry(line);
      if (entry) for (const watcher of [...watchers]) watcher(entry);
    }
  };
  child.stdout.on('data', append);
  child.stderr.on('data', append);
  let exit: string | null = null;
  const exited = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      exit = `caddy exited (${signal ?? code})`;
      resolve();
    });
    child.once('error', (error) => {
      exit = `caddy failed: ${error.message}`;
      resolve();
    });
  });

  const logged = (match: (entry: LogEntry) => boolean, timeoutMs = WAIT_MS) =>
    new Promise<LogEntry>((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        watchers.delete(watcher);
      };
      const watcher = (entry: LogEntry) => {
        if (!match(entry)) return;
        done();
        resolve(entry);
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`caddy logged no such entry within ${timeoutMs} ms:\n${output}`));
      }, timeoutMs);
      watchers.add(watcher);
      void exited.then(() => {
        if (!watchers.has(watcher)) return;
        done();
        reject(new Error(`${exit} while waiting for a log entry:\n${output}`));
      });
    });

  const url = `http://127.0.0.1:${port}`;
  let stopping: Promise<void> | null = null;
  const proxy: CaddyProxy = {
    url,
    wsUrl: `ws://127.0.0.1:${port}/graphql`,
    output: () => output,
    logged,
    stop() {
      stopping ??= (async () => {
        if (exit === null) {
          child.kill('SIGTERM');
          const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
          await exited;
          clearTimeout(timer);
        }
        rmSync(home, { recursive: true, force: true });
      })();
      return stopping;
    },
  };

  try {
    await logged((entry) => entry['msg'] === 'serving initial configuration', START_TIMEOUT_MS);
    const ready = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(WAIT_MS) });
    const body = await ready.text();
    if (ready.status !== 200) {
      throw new Error(`/readyz through caddy answered ${ready.status} ${body}:\n${output}`);
    }
  } catch (error) {
    await proxy.stop();
    throw error;
  }
  return proxy;
}

/**
 * Registers the hooks of a suite that runs Caddy in front of `upstreams()` (host:port each, read
 * in beforeAll). Call it after `useInstances`, so its beforeAll runs once the instances are up
 * and its afterAll before theirs; then `useClients()` for the clients that go through Caddy,
 * so they close before it stops (Caddy waits for open streams up to its grace period). The
 * handle is usable in tests and hooks.
 */
export function useCaddy(upstreams: () => readonly string[]): CaddyProxy {
  let proxy: CaddyProxy | undefined;
  beforeAll(async () => {
    proxy = await startCaddy(upstreams());
  });
  afterAll(async () => {
    await proxy?.stop();
  });
  const started = () => {
    if (!proxy) throw new Error('caddy is not started (use it in tests or hooks)');
    return proxy;
  };
  return {
    get url() {
      return started().url;
    },
    get wsUrl() {
      return started().wsUrl;
    },
    output: () => started().output(),
    logged: (match, timeoutMs) => started().logged(match, timeoutMs),
    stop: () => started().stop(),
  };
}
