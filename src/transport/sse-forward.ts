import { randomUUID } from 'node:crypto';
import { type SseCommand, type SseReply, topic } from '../domain/events.ts';
import type { Logger } from '../logger.ts';
import type { PubSub } from '../pubsub/index.ts';

type Without<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

/** A command as its sender writes it (the request id and the sender are added). */
export type SseRequest = Without<SseCommand, 'requestId' | 'requesterId'>;
/** An answer as its instance writes it (the request id is added). */
export type SseAnswer = Without<SseReply, 'requestId'>;

export interface SseForwardingOptions {
  pubsub: PubSub;
  /** This instance (its command topic, and the reply topic of its requests). */
  instanceId: string;
  /** How long `ask` waits for an answer (SSE_FORWARD_TIMEOUT_MS). */
  timeoutMs: number;
  logger: Logger;
  /** Answers a command addressed to this instance. */
  answer: (command: SseCommand) => Promise<SseAnswer>;
}

/**
 * Request and reply between instances about graphql-sse reservations, over pub/sub: commands on
 * `topic('sseCommand', instanceId)`, answers on `topic('sseReply', requesterId)`, matched by a
 * request id. Delivery is at most once, so every request waits at most `timeoutMs`.
 */
export function createSseForwarding(options: SseForwardingOptions) {
  const { pubsub, instanceId, logger } = options;
  const pending = new Map<string, (answer: SseAnswer | null) => void>();

  const answer = (command: SseCommand): Promise<SseAnswer> =>
    options.answer(command).catch((error: unknown) => {
      logger.error({ err: error, kind: command.kind }, 'sse command failed');
      return {
        kind: 'done',
        status: 500,
        body: { errors: [{ message: 'Internal server error' }] },
      } as const;
    });

  const stopCommands = pubsub.listen(topic('sseCommand', instanceId), (command) => {
    void answer(command).then((reply) =>
      pubsub
        .publish(topic('sseReply', command.requesterId), { ...reply, requestId: command.requestId })
        .catch((error: unknown) => logger.warn({ err: error }, 'sse reply failed')),
    );
  });
  const stopReplies = pubsub.listen(topic('sseReply', instanceId), (reply) => {
    pending.get(reply.requestId)?.(reply);
  });

  return {
    /**
     * Sends `request` to instance `to` and resolves its answer, or null when none came within
     * the timeout (the instance died, or Redis lost the message). To this instance itself it
     * answers directly.
     */
    ask(to: string, request: SseRequest): Promise<SseAnswer | null> {
      const requestId = randomUUID();
      const command = { ...request, requestId, requesterId: instanceId } as SseCommand;
      if (to === instanceId) return answer(command);
      return new Promise((resolve) => {
        const finish = (reply: SseAnswer | null) => {
          clearTimeout(timer);
          pending.delete(requestId);
          resolve(reply);
        };
        const timer = setTimeout(() => finish(null), options.timeoutMs);
        pending.set(requestId, finish);
        pubsub.publish(topic('sseCommand', to), command).catch((error: unknown) => {
          logger.warn({ err: error }, 'sse command not sent');
          finish(null);
        });
      });
    },

    /** Stops answering and resolves every waiting request with null. */
    close(): void {
      stopCommands();
      stopReplies();
      for (const finish of [...pending.values()]) finish(null);
    },
  };
}

export type SseForwarding = ReturnType<typeof createSseForwarding>;
