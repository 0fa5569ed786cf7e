import { ResultQueue, WAIT_MS } from './clients.ts';

/** An open JSON-lines response, read as `curl -N` would: each line parsed as it arrives. */
export interface JsonLinesReader {
  status: number;
  contentType: string | null;
  /** Parsed lines, in order; ends when the server ends the response. */
  lines: ResultQueue<unknown>;
  /** The whole body, parsed, when the server answered with something other than 200. */
  body: unknown;
  close(): void;
}

/**
 * GETs (or, with `method`, POSTs to) a legacy stream. A 200 answer is read line by line into `lines` (the status arrives
 * before any line, so a stream that does not flush its headers fails the bounded wait); other
 * answers are read whole into `body`.
 */
export async function readJsonLines(
  url: string,
  headers: Record<string, string> = {},
  method = 'GET',
): Promise<JsonLinesReader> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), WAIT_MS);
  const response = await fetch(url, { method, headers, signal: controller.signal });
  clearTimeout(timer);
  const lines = new ResultQueue<unknown>();
  const reader: JsonLinesReader = {
    status: response.status,
    contentType: response.headers.get('content-type'),
    lines,
    body: undefined,
    close: () => controller.abort(),
  };
  if (response.status !== 200) {
    const text = await response.text();
    reader.body = text === '' ? '' : JSON.parse(text);
    return reader;
  }
  const body = response.body;
  if (!body) throw new Error('no body');
  void (async () => {
    const decoder = new TextDecoder();
    let buffered = '';
    const chunks = body.getReader();
    try {
      for (;;) {
        const { value: chunk, done } = await chunks.read();
        if (done) break;
        buffered += decoder.decode(chunk, { stream: true });
        let end = buffered.indexOf('\n');
        while (end >= 0) {
          lines.push(JSON.parse(buffered.slice(0, end)));
          buffered = buffered.slice(end + 1);
          end = buffered.indexOf('\n');
        }
      }
      lines.end();
    } catch (error) {
      lines.end(error);
    }
  })();
  return reader;
}
