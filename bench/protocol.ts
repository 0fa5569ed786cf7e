/** The GraphQL operations and payloads every server under test is driven with. */

/** What each load subscriber runs: only messages, so its first event is `{"notify":{}}`. */
export const SUBSCRIBER_QUERY = 'subscription { notify { ... on NotifyMessage { name message } } }';

/** The publisher's own subscription: its first event carries the channel id it publishes with. */
export const PUBLISHER_QUERY =
  'subscription { notify { ... on NotifyChannel { channelId } ... on NotifyMessage { name message } } }';

export const PUBLISH_MUTATION =
  'mutation Publish($input: PublishInput!) { publish(input: $input) }';

/** graphql-transport-ws subprotocol. */
export const WS_PROTOCOL = 'graphql-transport-ws';

/** Every load subscriber uses this operation id, so identical events make identical frames. */
export const OPERATION_ID = '1';

/**
 * The notify message of event `seq`: `{"seq":<n>,"pad":"xxx…"}` padded so that its JSON is
 * `payloadBytes` long (or as short as possible). `seq` comes first so clients find it cheaply.
 */
export function benchMessage(seq: number, payloadBytes: number): { seq: number; pad: string } {
  const overhead = JSON.stringify({ seq, pad: '' }).length;
  return { seq, pad: 'x'.repeat(Math.max(0, payloadBytes - overhead)) };
}

/** Who a publish is addressed to: everyone (the fan-out runs) or some users. */
export type PublishTargets = { toAll: true } | { toUsers: string[] };

/** The JSON body of one publish request. */
export function publishBody(
  channelId: string,
  seq: number,
  payloadBytes: number,
  to: PublishTargets = { toAll: true },
): string {
  return JSON.stringify({
    query: PUBLISH_MUTATION,
    variables: {
      input: { channelId, ...to, name: 'bench', message: benchMessage(seq, payloadBytes) },
    },
  });
}

const SEQ_KEY = '"seq":';
const SEQ_KEY_BYTES = Buffer.from(SEQ_KEY);
const ZERO = 48;

function digitsAt(read: (i: number) => number, from: number, end: number): number {
  let value = -1;
  for (let i = from; i < end; i++) {
    const c = read(i) - ZERO;
    if (c < 0 || c > 9) break;
    value = (value < 0 ? 0 : value * 10) + c;
  }
  return value;
}

/** The `seq` of a bench message inside a frame, or -1 when the frame carries none. */
export function seqOfFrame(frame: Buffer): number {
  const at = frame.indexOf(SEQ_KEY_BYTES);
  if (at < 0) return -1;
  return digitsAt((i) => frame[i] ?? 0, at + SEQ_KEY_BYTES.length, frame.length);
}

/** The `seq` of a bench message inside an SSE event block, or -1. */
export function seqOfText(text: string): number {
  const at = text.indexOf(SEQ_KEY);
  if (at < 0) return -1;
  return digitsAt((i) => text.charCodeAt(i), at + SEQ_KEY.length, text.length);
}
