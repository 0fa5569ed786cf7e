import type { ServerResponse } from 'node:http';

export type Check = () => Promise<void>;

const CHECK_TIMEOUT_MS = 2_000;

function withTimeout(check: Check): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('timed out')), CHECK_TIMEOUT_MS);
    check().then(
      () => {
        clearTimeout(timer);
        resolve();
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}

/**
 * /healthz answers 200 while the process serves HTTP. /readyz runs every dependency check
 * (each bounded by 2 s) and answers 200 when all pass, 503 otherwise, naming each result; and
 * 503 `draining` once shutdown began.
 */
export function createHealth(checks: Record<string, Check>) {
  let draining = false;
  return {
    /** From now on /readyz answers 503 `draining` (shutdown has begun). */
    drain() {
      draining = true;
    },
    live(res: ServerResponse) {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"status":"ok"}');
    },
    async ready(res: ServerResponse) {
      if (draining) {
        res.writeHead(503, { 'content-type': 'application/json' });
        res.end('{"status":"draining","checks":{}}');
        return;
      }
      const entries = Object.entries(checks);
      const results = await Promise.allSettled(entries.map(([, check]) => withTimeout(check)));
      const report: Record<string, string> = {};
      let ok = true;
      results.forEach((result, i) => {
        const name = entries[i]?.[0] ?? String(i);
        if (result.status === 'fulfilled') report[name] = 'ok';
        else {
          ok = false;
          report[name] = `down: ${(result.reason as Error).message}`;
        }
      });
      res.writeHead(ok ? 200 : 503, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ status: ok ? 'ready' : 'unavailable', checks: report }));
    },
  };
}
