import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ExecutionResult } from 'graphql';
import { afterAll, describe, expect, it } from 'vitest';
import {
  NotifyDocument,
  type NotifySubscription,
  PublishDocument,
  ViewerDocument,
} from './generated/graphql.ts';
import { TEST_TOKEN_KEY } from './support/app.ts';
import { gql, type ResultQueue, sseClient, wsClient } from './support/clients.ts';
import { createTestDatabase } from './support/postgres.ts';
import { type ServerProcess, spawnServer } from './support/process.ts';
import { requireRedis } from './support/redis.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

type NotifyQueue = ResultQueue<ExecutionResult<NotifySubscription>>;

async function channelOf(queue: NotifyQueue): Promise<string> {
  const event = (await queue.next()).data?.notify;
  if (event?.__typename !== 'NotifyChannel')
    throw new Error(`expected a channel, got ${JSON.stringify(event)}`);
  return event.channelId;
}

async function messageOf(queue: NotifyQueue) {
  const event = (await queue.next()).data?.notify;
  if (event?.__typename !== 'NotifyMessage')
    throw new Error(`expected a message, got ${JSON.stringify(event)}`);
  return event;
}

describe('server processes', () => {
  const processes: ServerProcess[] = [];
  const folders: string[] = [];
  afterAll(async () => {
    await Promise.all(processes.map((p) => p.stop('SIGKILL')));
    for (const folder of folders) rmSync(folder, { recursive: true, force: true });
  });

  it('starts with embedded defaults, prints dev tokens, serves notify over graphql-ws and SSE, shuts down cleanly', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'switchboard-'));
    folders.push(dataDir);
    const server = await spawnServer({ DATA_DIR: dataDir });
    processes.push(server);
    const user = /user 1:\s+(\S+)/.exec(server.output())?.[1];
    const service = /service:\s+(\S+)/.exec(server.output())?.[1];
    expect(user).toBeTruthy();
    expect(service).toBeTruthy();

    const viewer = await gql(server.url, ViewerDocument, {}, user);
    expect(viewer.body.data?.viewer?.userId).toBe('1');

    const ws = wsClient(server.wsUrl, user);
    const sse = sseClient(server.url, user);
    const overWs = ws.subscribe(NotifyDocument, {});
    const overSse = sse.subscribe(NotifyDocument, {});
    await channelOf(overWs);
    await channelOf(overSse);
    const sender = wsClient(server.wsUrl, service);
    const senderChannel = await channelOf(sender.subscribe(NotifyDocument, {}));
    const published = await gql(
      server.url,
      PublishDocument,
      { input: { channelId: senderChannel, name: 'hi', toUsers: ['1'], message: [1, 2] } },
      service,
    );
    expect(published.body.data?.publish).toBe(true);
    expect(await messageOf(overWs)).toMatchObject({
      name: 'hi',
      senderUserId: 'service',
      message: [1, 2],
    });
    expect(await messageOf(overSse)).toMatchObject({
      name: 'hi',
      senderUserId: 'service',
      message: [1, 2],
    });

    expect(await server.stop('SIGTERM')).toBe(0);
    await overWs.waitForEnd();
    await overSse.waitForEnd();
    expect(ws.closes[0]?.code).toBe(1001);
    sse.dispose();
  });

  it('fans out between two processes sharing Postgres and Redis', async () => {
    const [db, redis] = await Promise.all([createTestDatabase(), requireRedis()]);
    try {
      const env = {
        DATABASE_URL: db.url,
        REDIS_URL: redis.url,
        REDIS_PREFIX: redis.prefix,
        AUTH_TOKEN_KEY: TEST_TOKEN_KEY,
        LOG_LEVEL: 'warn',
      };
      const [one, two] = await Promise.all([
        spawnServer({ ...env, LOG_LEVEL: 'info' }),
        spawnServer({ ...env, LOG_LEVEL: 'info' }),
      ]);
      processes.push(one, two);
      const { createAuthenticator } = await import('../src/auth/index.ts');
      const { createLogger } = await import('../src/logger.ts');
      const auth = createAuthenticator({
        tokenKey: TEST_TOKEN_KEY,
        logger: createLogger('silent'),
      });
      const [receiverToken, senderToken] = await Promise.all([
        auth.sign({ sub: 'r' }),
        auth.sign({ sub: 's' }),
      ]);

      const receiver = wsClient(one.wsUrl, receiverToken);
      const stream = receiver.subscribe(NotifyDocument, {});
      await channelOf(stream);
      const sender = wsClient(two.wsUrl, senderToken);
      const senderChannel = await channelOf(sender.subscribe(NotifyDocument, {}));
      await gql(
        two.url,
        PublishDocument,
        { input: { channelId: senderChannel, name: 'x', toUsers: ['r'] } },
        senderToken,
      );
      expect(await messageOf(stream)).toMatchObject({ name: 'x', senderUserId: 's' });
      receiver.dispose();
      sender.dispose();
      expect(await Promise.all([one.stop(), two.stop()])).toEqual([0, 0]);
    } finally {
      await db.drop();
    }
  });

  it('npm start compiles to dist/ and runs plain JavaScript, with no tsx in the server', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'switchboard-'));
    folders.push(dataDir);
    const started = await startWithNpm({ DATA_DIR: dataDir });
    try {
      expect(commandLine(started.serverPid)).toEqual(['node', 'dist/main.js']);
      // No process of the tree (npm, sh, node) runs tsx.
      for (const pid of [started.npm.pid as number, ...descendants(started.npm.pid as number)]) {
        expect(commandLine(pid).join(' ')).not.toContain('tsx');
      }
      const user = /user 1:\s+(\S+)/.exec(started.output())?.[1];
      const viewer = await gql(started.url, ViewerDocument, {}, user);
      expect(viewer.body.data?.viewer?.userId).toBe('1');
    } finally {
      await started.stop();
    }
  }, 120_000);
});

/** The argv of a process (node's own path shortened to "node" for comparison). */
function commandLine(pid: number): string[] {
  return readFileSync(`/proc/${pid}/cmdline`, 'utf8')
    .split('\0')
    .filter(Boolean)
    .map(basenameIfNode);
}

function basenameIfNode(arg: string): string {
  return arg === process.execPath || arg.endsWith('/node') ? 'node' : arg;
}

/** Every process below `root`, from /proc. */
function descendants(root: number): number[] {
  const parents = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      parents.set(Number(entry), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {}
  }
  const found: number[] = [];
  const queue = [root];
  while (queue.length > 0) {
    const parent = queue.shift() as number;
    for (const [pid, ppid] of parents) {
      if (ppid === parent) {
        found.push(pid);
        queue.push(pid);
      }
    }
  }
  return found;
}

/** `npm start` (the README's command) with `env`, until it listens; bounded. */
async function startWithNpm(env: Record<string, string>) {
  const npm = spawn('npm', ['start', '--silent'], {
    cwd: ROOT,
    env: {
      PATH: process.env['PATH'] ?? '',
      HOME: process.env['HOME'] ?? '',
      PORT: '0',
      HOST: '127.0.0.1',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  npm.stdout.on('data', (chunk: Buffer) => {
    output += chunk.toString();
  });
  npm.stderr.on('data', (chunk: Buffer) => {
    output += chunk.toString();
  });
  const exited = once(npm, 'exit');
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`npm start did not listen in 90 s:\n${output}`)),
      90_000,
    );
    const onData = () => {
      const match = /"url":"(http:[^"]+)".*switchboard listening/.exec(output);
      if (!match?.[1]) return;
      clearTimeout(timer);
      resolve(match[1]);
    };
    npm.stdout.on('data', onData);
    npm.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`npm start exited with ${code}:\n${output}`));
    });
  });
  const serverPid = descendants(npm.pid as number).find((pid) =>
    commandLine(pid).includes('dist/main.js'),
  );
  if (serverPid === undefined) throw new Error('no dist/main.js process under npm start');
  return {
    npm,
    url,
    serverPid,
    output: () => output,
    async stop() {
      // SIGTERM to the server itself: npm and sh do not forward signals to it.
      process.kill(serverPid, 'SIGTERM');
      const timer = setTimeout(() => npm.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(timer);
    },
  };
}
