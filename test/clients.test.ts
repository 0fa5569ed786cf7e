import {
  ApolloClient,
  ApolloLink,
  HttpLink,
  InMemoryCache,
  type TypedDocumentNode,
} from '@apollo/client';
import { GraphQLWsLink } from '@apollo/client/link/subscriptions';
import { getMainDefinition } from '@apollo/client/utilities';
import {
  fetchExchange,
  type OperationResult,
  type SubscriptionForwarder,
  subscriptionExchange,
  Client as UrqlClient,
} from '@urql/core';
import type { Client as WsClient } from 'graphql-ws';
import { describe, expect, it } from 'vitest';
import {
  NotifyDocument,
  type NotifySubscription,
  PublishDocument,
  ViewerDocument,
} from './generated/graphql.ts';
import type { TestServer } from './support/app.ts';
import { ResultQueue } from './support/clients.ts';
import { useInstances } from './support/instances.ts';

/** Something with a graphql-ws / graphql-sse style `subscribe(payload, sink) -> dispose`. */
interface ProtocolClient {
  subscribe(
    payload: { query: string; variables?: Record<string, unknown>; operationName?: string },
    sink: {
      next(value: never): void;
      error(error: unknown): void;
      complete(): void;
    },
  ): () => void;
}

/** urql's subscriptionExchange over a graphql-ws or graphql-sse client (as urql documents it). */
function forwardTo(protocol: ProtocolClient): SubscriptionForwarder {
  return (request) => ({
    subscribe(sink) {
      const unsubscribe = protocol.subscribe(
        {
          query: request.query ?? '',
          ...(request.variables ? { variables: request.variables } : {}),
          ...(request.operationName ? { operationName: request.operationName } : {}),
        },
        sink as never,
      );
      return { unsubscribe };
    },
  });
}

/** A urql client of `server`: HTTP for queries and mutations, `protocol` for subscriptions. */
function urql(server: TestServer, token: string, protocol: ProtocolClient): UrqlClient {
  return new UrqlClient({
    url: `${server.url}/graphql`,
    exchanges: [subscriptionExchange({ forwardSubscription: forwardTo(protocol) }), fetchExchange],
    fetchOptions: { headers: { authorization: `Bearer ${token}` } },
    requestPolicy: 'network-only',
  });
}

/** An Apollo Client of `server`: subscriptions over GraphQLWsLink, everything else over HTTP. */
function apollo(server: TestServer, token: string, ws: WsClient): ApolloClient {
  const isSubscription: Parameters<typeof ApolloLink.split>[0] = ({ query }) => {
    const definition = getMainDefinition(query);
    return definition.kind === 'OperationDefinition' && definition.operation === 'subscription';
  };
  return new ApolloClient({
    link: ApolloLink.split(
      isSubscription,
      new GraphQLWsLink(ws),
      new HttpLink({ uri: `${server.url}/graphql`, headers: { authorization: `Bearer ${token}` } }),
    ),
    cache: new InMemoryCache({
      possibleTypes: { NotifyEvent: ['NotifyChannel', 'NotifyMessage'] },
    }),
  });
}

type NotifyEvent = NotifySubscription['notify'];

/** The channel id of a notify stream's first event. */
function channelOf(event: NotifyEvent | undefined): string {
  if (event?.__typename !== 'NotifyChannel')
    throw new Error(`not a channel: ${JSON.stringify(event)}`);
  return event.channelId;
}

describe('real GraphQL clients against two instances', () => {
  const { a, b, ws, sse, onCleanup } = useInstances();

  for (const transport of ['graphql-ws', 'graphql-sse'] as const) {
    it(`urql: query, mutation and a subscription over ${transport}`, async () => {
      const [senderToken, receiverToken] = await Promise.all([
        a.token(`urql-${transport}-sender`),
        b.token(`urql-${transport}-receiver`),
      ]);
      const protocolOf = (server: TestServer, token: string) =>
        transport === 'graphql-ws' ? ws(server, token).client : sse(server, token).client;
      const sender = urql(a, senderToken, protocolOf(a, senderToken));
      const receiver = urql(b, receiverToken, protocolOf(b, receiverToken));

      const viewer = await receiver.query(ViewerDocument, {}).toPromise();
      expect(viewer.error).toBeUndefined();
      expect(viewer.data?.viewer).toEqual({
        userId: `urql-${transport}-receiver`,
        group: null,
        isService: false,
      });

      const senderEvents = new ResultQueue<OperationResult<NotifySubscription>>();
      const receiverEvents = new ResultQueue<OperationResult<NotifySubscription>>();
      const subscriptions = [
        sender.subscription(NotifyDocument, {}).subscribe((r) => senderEvents.push(r)),
        receiver.subscription(NotifyDocument, {}).subscribe((r) => receiverEvents.push(r)),
      ];
      onCleanup(...subscriptions.map((s) => () => s.unsubscribe()));
      const channelId = channelOf((await senderEvents.next()).data?.notify);
      channelOf((await receiverEvents.next()).data?.notify);

      const published = await sender
        .mutation(PublishDocument, {
          input: {
            channelId,
            name: 'urql',
            message: { via: transport },
            toUsers: [`urql-${transport}-receiver`],
          },
        })
        .toPromise();
      expect(published.error).toBeUndefined();
      expect(published.data).toEqual({ publish: true });

      const message = await receiverEvents.next();
      expect(message.error).toBeUndefined();
      expect(message.data?.notify).toEqual({
        __typename: 'NotifyMessage',
        senderUserId: `urql-${transport}-sender`,
        senderChannelId: channelId,
        name: 'urql',
        message: { via: transport },
      });
    });
  }

  it('Apollo Client: query and mutation over HttpLink, a subscription over GraphQLWsLink', async () => {
    const [senderToken, receiverToken] = await Promise.all([
      a.token('apollo-sender', { group: 'apollo' }),
      b.token('apollo-receiver'),
    ]);
    const sender = apollo(a, senderToken, ws(a, senderToken).client);
    const receiver = apollo(b, receiverToken, ws(b, receiverToken).client);
    onCleanup(
      () => sender.stop(),
      () => receiver.stop(),
    );

    const viewer = await sender.query({ query: ViewerDocument, fetchPolicy: 'network-only' });
    expect(viewer.data?.viewer).toEqual({
      __typename: 'Viewer',
      userId: 'apollo-sender',
      group: 'apollo',
      isService: false,
    });

    const subscribe = (client: ApolloClient) => {
      const events = new ResultQueue<NotifyEvent | undefined>();
      const subscription = client
        .subscribe({
          query: NotifyDocument as TypedDocumentNode<NotifySubscription>,
          fetchPolicy: 'no-cache',
        })
        .subscribe({
          next: (result) => events.push(result.data?.notify),
          error: (error: unknown) => events.end(error),
          complete: () => events.end(),
        });
      onCleanup(() => subscription.unsubscribe());
      return events;
    };
    const senderEvents = subscribe(sender);
    const receiverEvents = subscribe(receiver);
    const channelId = channelOf(await senderEvents.next());
    channelOf(await receiverEvents.next());

    const published = await sender.mutate({
      mutation: PublishDocument,
      variables: {
        input: { channelId, name: 'apollo', message: [1, 2], toUsers: ['apollo-receiver'] },
      },
    });
    expect(published.data).toEqual({ publish: true });
    expect(await receiverEvents.next()).toEqual({
      __typename: 'NotifyMessage',
      senderUserId: 'apollo-sender',
      senderChannelId: channelId,
      name: 'apollo',
      message: [1, 2],
    });
  });

  it('Apollo Client: errors carry extensions.code', async () => {
    const token = await a.token('apollo-bad');
    const client = apollo(a, token, ws(a, token).client);
    onCleanup(() => client.stop());
    const result = await client.mutate({
      mutation: PublishDocument,
      variables: { input: { channelId: 'nope', name: 'x', toAll: true } },
      errorPolicy: 'all',
    });
    expect(result.error?.message).toMatch(/channel id/i);
    const errors = (result.error as { errors?: { extensions?: { code?: string } }[] }).errors;
    expect(errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
  });
});
