import http from 'node:http';
import { cpuSeconds, waitIdle } from '../proc.ts';

/** Requests per server CPU-second of one kind of HTTP request. */
export interface RequestsResult {
  /** What was requested, e.g. `{ ok }`. */
  operation: string;
  requests: number;
  inFlight: number;
  /** utime + stime of the server during the measured requests. */
  cpuSeconds: number;
  wallSeconds: number;
  perCpuSecond: number;
  perWallSecond: number;
  /** Server CPU per request, ms. */
  cpuMsPerRequest: number;
  startedIdle: boolean;
}

/** One request of the load: request `index`'s body and headers. */
export interface RequestSpec {
  operation: string;
  /** http://127.0.0.1:<port>/graphql */
  endpoint: string;
  request(index: number): { body: string; headers: Record<string, string> };
  /** Whether an answer is the expected success (anything else fails the phase). */
  ok(status: number, body: string): boolean;
}

function send(agent: http.Agent, spec: RequestSpec, index: number): Promise<void> {
  const { body, headers } = spec.request(index);
  return new Promise((resolve, reject) => {
    const req = http.request(spec.endpoint, {
      method: 'POST',
      agent,
      timeout: 15_000,
      headers: { 'content-type': 'application/json', accept: 'application/json', ...headers },
    });
    req.once('timeout', () => req.destroy(new Error(`${spec.operation}: request timed out`)));
    req.once('error', reject);
    req.once('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.once('error', reject);
      res.once('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        if (spec.ok(res.statusCode ?? 0, text)) resolve();
        else reject(new Error(`${spec.operation}: ${res.statusCode} ${text.slice(0, 300)}`));
      });
    });
    req.end(body);
  });
}

/** Sends `count` requests keeping `inFlight` of them outstanding on kept-alive sockets. */
async function load(agent: http.Agent, spec: RequestSpec, count: number, inFlight: number) {
  let next = 0;
  const worker = async () => {
    while (next < count) await send(agent, spec, next++);
  };
  await Promise.all(Array.from({ length: Math.min(inFlight, count) }, worker));
}

/**
 * Warms up with `warmup` requests, waits for the server to go idle, then sends `requests`
 * requests with `inFlight` outstanding and reads the server's CPU from /proc before and after.
 */
export async function measureRequests(
  pid: number,
  spec: RequestSpec,
  options: { requests: number; warmup: number; inFlight: number },
): Promise<RequestsResult> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: options.inFlight });
  try {
    await load(agent, spec, options.warmup, options.inFlight);
    const startedIdle = await waitIdle([pid]);
    const before = await cpuSeconds(pid);
    const started = performance.now();
    await load(agent, spec, options.requests, options.inFlight);
    const wallSeconds = (performance.now() - started) / 1000;
    const cpu = (await cpuSeconds(pid)) - before;
    return {
      operation: spec.operation,
      requests: options.requests,
      inFlight: options.inFlight,
      cpuSeconds: cpu,
      wallSeconds,
      perCpuSecond: cpu > 0 ? options.requests / cpu : Number.NaN,
      perWallSecond: options.requests / wallSeconds,
      cpuMsPerRequest: (cpu * 1000) / options.requests,
      startedIdle,
    };
  } finally {
    agent.destroy();
  }
}

const json = (value: unknown) => JSON.stringify(value);

/** `{ ok }` on the bare yoga server. */
export const okSpec = (url: string): RequestSpec => ({
  operation: '{ ok }',
  endpoint: `${url}/graphql`,
  request: () => ({ body: json({ query: '{ ok }' }), headers: {} }),
  ok: (status, body) => status === 200 && body.includes('"ok":true'),
});

/** `{ viewer { userId } }` with the token of one of `tokens`, round-robin. */
export const viewerSpec = (url: string, tokens: readonly string[]): RequestSpec => ({
  operation: '{ viewer { userId } }',
  endpoint: `${url}/graphql`,
  request: (index) => ({
    body: json({ query: '{ viewer { userId } }' }),
    headers: { authorization: `Bearer ${tokens[index % tokens.length]}` },
  }),
  ok: (status, body) => status === 200 && body.includes('"userId":'),
});

/** `publish` to a user nobody subscribed as (the request path, not the fan-out). */
export const publishSpec = (url: string, token: string, channelId: string): RequestSpec => ({
  operation: 'publish (to one user)',
  endpoint: `${url}/graphql`,
  request: (index) => ({
    body: json({
      query: 'mutation Publish($input: PublishInput!) { publish(input: $input) }',
      variables: {
        input: { channelId, toUsers: ['bench-nobody'], name: 'bench', message: { seq: index } },
      },
    }),
    headers: { authorization: `Bearer ${token}` },
  }),
  ok: (status, body) => status === 200 && body.includes('"publish":true'),
});
