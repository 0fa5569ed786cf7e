// The Switchboard live demo: applause, presence, notify and chat over the public GraphQL API.
// No framework and no build step: a small graphql-transport-ws client for subscriptions and
// fetch for queries and mutations. User data is only ever set as textContent.

const params = new URLSearchParams(location.search);
const meetingId = params.get('meeting') || '1';
const demoUsers = (params.get('users') || 'ada,grace,linus')
  .split(',')
  .map((u) => u.trim())
  .filter(Boolean)
  .slice(0, 8);
const $ = (id) => document.getElementById(id);

/**
 * A minimal client of the graphql-transport-ws protocol, reconnecting with back-off. Variables
 * may be a function: it is asked again at every (re)subscribe, so a stream resumes where it was.
 */
class GraphQLWs {
  #url;
  /** The token of the next connection_init; `refresh` replaces it in-band as well. */
  token;
  #socket = null;
  #nextId = 1;
  #active = new Map(); // id -> { payload, sink }
  #attempt = 0;
  #stopped = false;
  onState = () => {};

  constructor(url, token) {
    this.#url = url;
    this.token = token;
    this.#connect();
  }

  subscribe(query, variables, sink) {
    const id = String(this.#nextId++);
    const entry = { query, variables, sink };
    this.#active.set(id, entry);
    if (this.#socket?.acknowledged) this.#start(id, entry);
    return () => {
      if (this.#active.delete(id) && this.#socket?.acknowledged)
        this.#send({ id, type: 'complete' });
    };
  }

  /** One query or mutation on the socket (so it runs on this connection); resolves its data. */
  request(query, variables) {
    return new Promise((resolve, reject) => {
      const stop = this.subscribe(query, variables, {
        next: (data) => {
          stop();
          resolve(data);
        },
        error: (errors) => reject(new Error(errors[0]?.message ?? 'request failed')),
      });
    });
  }

  /**
   * Puts a new token on the open connection (refreshToken): its subscriptions stay, it then
   * expires with the new token, and a reconnect uses it too.
   */
  async refresh(token) {
    const data = await this.request(
      'mutation DemoRefresh($t: String!) { refreshToken(token: $t) { expiresAt } }',
      { t: token },
    );
    this.token = token;
    return data.refreshToken;
  }

  #start(id, { query, variables }) {
    const values = typeof variables === 'function' ? variables() : variables;
    this.#send({ id, type: 'subscribe', payload: { query, variables: values } });
  }

  #send(message) {
    this.#socket?.send(JSON.stringify(message));
  }

  #connect() {
    this.onState('connecting');
    const socket = new WebSocket(this.#url, 'graphql-transport-ws');
    this.#socket = socket;
    socket.onopen = () =>
      socket.send(
        JSON.stringify({
          type: 'connection_init',
          payload: { authorization: `Bearer ${this.token}` },
        }),
      );
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      const entry = message.id ? this.#active.get(message.id) : null;
      switch (message.type) {
        case 'connection_ack':
          socket.acknowledged = true;
          this.#attempt = 0;
          this.onState('live');
          for (const [id, entry] of this.#active) this.#start(id, entry);
          break;
        case 'ping':
          this.#send({ type: 'pong' });
          break;
        case 'next':
          if (message.payload.errors) entry?.sink.error?.(message.payload.errors);
          if (message.payload.data) entry?.sink.next(message.payload.data);
          break;
        case 'error':
          this.#active.delete(message.id);
          entry?.sink.error?.(message.payload);
          break;
        case 'complete':
          this.#active.delete(message.id);
          break;
      }
    };
    socket.onclose = (event) => {
      if (this.#socket !== socket || this.#stopped) return;
      // 4401 (expired) and 4403 (dropped or refused) need a new token, not a retry.
      if (event.code === 4401 || event.code === 4403 || event.code === 4400) {
        this.onState('closed', `closed ${event.code} ${event.reason}`);
        return;
      }
      this.onState('connecting');
      const delay = Math.min(10_000, 500 * 2 ** this.#attempt++);
      setTimeout(() => this.#connect(), delay);
    };
  }
}

/** The current token of HTTP requests (refreshed with the socket's). */
const session = { token: null };

/** A GraphQL query or mutation over HTTP; throws the first error's message. */
async function request(query, variables = {}) {
  const response = await fetch('/graphql', {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${session.token}` },
    body: JSON.stringify({ query, variables }),
  });
  const body = await response.json();
  if (body.errors?.length) throw new Error(body.errors[0].message);
  return body.data;
}

/** The token: from ?token=, else a development token for ?user= (or the first demo user). */
async function obtainToken() {
  const given = params.get('token');
  if (given) return { token: given, devMode: false };
  const user = params.get('user') || demoUsers[0];
  const response = await fetch(`/demo/token?user=${encodeURIComponent(user)}`);
  if (!response.ok) return { token: null, devMode: false };
  return { token: (await response.json()).token, devMode: true };
}

const el = (tag, className, text) => {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
};
const clock = (date) =>
  date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
const hue = (name) => [...name].reduce((h, c) => (h * 31 + c.charCodeAt(0)) % 360, 7);

function appendLog(list, parts, className = '') {
  const item = el('li', className);
  item.append(el('time', '', clock(new Date())), ...parts);
  list.append(item);
  while (list.children.length > 200) list.firstElementChild.remove();
  list.scrollTop = list.scrollHeight;
  return item;
}

function setupApplause(client) {
  const meter = $('meter');
  let last = 0;
  client.subscribe(
    'subscription DemoApplause($m: ID!) { applause(meetingId: $m) { level presentUsers } }',
    { m: meetingId },
    {
      next: ({ applause }) => {
        const { level, presentUsers } = applause;
        $('applause-level').textContent = String(level);
        $('applause-present').textContent = String(presentUsers);
        meter.dataset.level = String(level);
        meter.style.setProperty('--fill', String(Math.min(1, level / Math.max(1, presentUsers))));
        if (level > last) {
          meter.classList.remove('bump');
          void meter.offsetWidth; // restart the animation
          meter.classList.add('bump');
        }
        last = level;
      },
    },
  );
  $('applause-button').addEventListener('click', async () => {
    const button = $('applause-button');
    button.disabled = true;
    try {
      await request('mutation DemoClap($m: ID!) { sendApplause(meetingId: $m) }', {
        m: meetingId,
      });
    } finally {
      setTimeout(() => (button.disabled = false), 300);
    }
  });
}

function setupPresence(client, me) {
  const list = $('presence-list');
  const rows = new Map();
  const people = [me, ...demoUsers.filter((u) => u !== me)];
  for (const userId of people) {
    const row = el('li');
    row.dataset.status = 'OFFLINE';
    const avatar = el('span', 'avatar', userId.slice(0, 1).toUpperCase());
    avatar.style.background = `hsl(${hue(userId)} 70% 65%)`;
    const person = el('span', 'person');
    const seen = el('span', 'seen', 'never seen');
    person.append(el('span', 'name', userId), seen);
    row.append(avatar, person);
    if (userId === me) row.append(el('span', 'tag', 'you'));
    list.append(row);
    rows.set(userId, { row, seen, time: null, status: null, online: false });
    client.subscribe(
      'subscription DemoPresence($u: ID!) { presence(userId: $u) { userId status time online } }',
      { u: userId },
      {
        next: ({ presence }) => {
          const entry = rows.get(presence.userId);
          Object.assign(entry, {
            time: new Date(presence.time),
            status: presence.status,
            online: presence.online,
          });
          render(entry);
        },
      },
    );
  }
  const label = {
    ACTIVE: 'online',
    AWAY: 'away',
    DO_NOT_DISTURB: 'do not disturb',
    INVISIBLE: 'invisible',
  };
  function render(entry) {
    entry.row.dataset.status = entry.online ? entry.status : 'OFFLINE';
    if (!entry.time) return;
    const ago = Math.max(0, Math.round((Date.now() - entry.time) / 1000));
    entry.seen.textContent = `${entry.online ? label[entry.status] : 'offline'} · ${ago < 5 ? 'just now' : `${ago}s ago`}`;
  }
  setInterval(() => rows.forEach(render), 5_000);

  const ping = () =>
    request('mutation DemoPing($s: PresenceStatus) { ping(status: $s) { status } }', {
      s: $('my-status').value,
    }).catch(() => {});
  $('my-status').addEventListener('change', ping);
  ping();
  setInterval(ping, 20_000);
}

function setupNotify(client, me) {
  const log = $('notify-log');
  let channelId = null;
  client.subscribe(
    `subscription DemoNotify($m: ID) { notify(meetingId: $m) { __typename
      ... on NotifyChannel { channelId } ... on NotifyMessage { senderUserId name message } } }`,
    { m: meetingId },
    {
      next: ({ notify }) => {
        if (notify.__typename === 'NotifyChannel') {
          channelId = notify.channelId;
          $('notify-channel').textContent = `channel ${channelId}`;
          return;
        }
        const text =
          typeof notify.message?.text === 'string'
            ? notify.message.text
            : JSON.stringify(notify.message);
        const label = notify.name === 'message' ? text : `${notify.name}: ${text}`;
        appendLog(log, [el('span', 'from', notify.senderUserId), el('span', 'text', label)]);
      },
      error: (errors) => appendLog(log, [el('span', 'system', errors[0]?.message ?? 'error')]),
    },
  );
  $('notify-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const input = $('notify-text');
    const text = input.value.trim();
    if (!text || !channelId) return;
    input.value = '';
    await request('mutation DemoPublish($i: PublishInput!) { publish(input: $i) }', {
      i: { channelId, name: 'message', toMeeting: meetingId, message: { text, from: me } },
    }).catch((error) => appendLog(log, [el('span', 'system', error.message)]));
  });
}

function setupChat(client, me) {
  const log = $('chat-log');
  const peersNav = $('chat-peers');
  const peers = demoUsers.filter((u) => u !== me);
  const unread = new Map(peers.map((p) => [p, 0]));
  let peer = peers[0] ?? null;
  const showError = (message) => ($('chat-error').textContent = message);

  const renderPeers = () => {
    peersNav.replaceChildren(
      ...peers.map((p) => {
        const button = el('button', '', p);
        button.type = 'button';
        button.setAttribute('aria-pressed', String(p === peer));
        if (unread.get(p)) button.append(el('span', 'unread', `● ${unread.get(p)}`));
        button.addEventListener('click', () => select(p));
        return button;
      }),
    );
  };
  const showMessage = (m) =>
    appendLog(
      log,
      [el('span', 'from', m.from), el('span', 'text', m.text ?? m.imagePath ?? '')],
      m.from === me ? 'mine' : '',
    );
  async function select(p) {
    peer = p;
    unread.set(p, 0);
    renderPeers();
    log.replaceChildren();
    showError('');
    try {
      const { messages } = await request(
        'query DemoMessages($p: ID!) { messages(peerId: $p, limit: 50) { id from to text imagePath createdAt } }',
        { p },
      );
      for (const message of messages) {
        seen(message.id);
        showMessage(message);
      }
    } catch (error) {
      showError(`${error.message} (${p} has to open the demo once)`);
    }
  }
  // After a reconnect the stream resumes after the last message seen (live or in the history):
  // nothing missed, no repeat. Ids order messages; "0" is before the first.
  let lastId = '0';
  const seen = (id) => {
    if (BigInt(id) > BigInt(lastId)) lastId = id;
  };
  client.subscribe(
    `subscription DemoChat($after: ID) { chat(afterId: $after) { __typename
      ... on ChatMessage { id from to text imagePath createdAt } ... on ConnectionState { userId active } } }`,
    () => ({ after: lastId }),
    {
      next: ({ chat }) => {
        if (chat.__typename === 'ConnectionState') {
          if (!peers.includes(chat.userId)) return;
          // A peer seen for the first time can be chatted with now: load the conversation.
          if (chat.userId === peer && chat.active && $('chat-error').textContent) select(peer);
          appendLog(log, [
            el('span', 'system', `${chat.userId} ${chat.active ? 'connected' : 'left'}`),
          ]);
          return;
        }
        seen(chat.id);
        const other = chat.from === me ? chat.to : chat.from;
        if (other === peer) showMessage(chat);
        else if (unread.has(other)) {
          unread.set(other, unread.get(other) + 1);
          renderPeers();
        }
      },
      error: (errors) => showError(errors[0]?.message ?? 'chat error'),
    },
  );
  $('chat-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const input = $('chat-text');
    const text = input.value.trim();
    if (!text || !peer) return;
    input.value = '';
    showError('');
    await request(
      'mutation DemoSend($to: ID!, $t: String) { sendChatMessage(to: $to, text: $t) { id } }',
      {
        to: peer,
        t: text,
      },
    ).catch((error) => showError(error.message));
  });
  if (peer) select(peer);
  else renderPeers();
}

async function main() {
  $('meeting-id').textContent = meetingId;
  const { token, devMode } = await obtainToken();
  session.token = token;
  if (!token) {
    $('auth-needed').hidden = false;
    $('link-state').dataset.state = 'closed';
    $('link-state').textContent = 'no token';
    return;
  }
  let me;
  try {
    const { viewer } = await request('query DemoViewer { viewer { userId } }');
    if (!viewer) throw new Error('The token was not accepted');
    me = viewer.userId;
  } catch (error) {
    $('auth-needed').hidden = false;
    $('auth-error').textContent = error.message;
    return;
  }
  $('me').textContent = me;
  if (devMode) {
    const nav = $('switch-user');
    nav.hidden = false;
    for (const user of demoUsers.filter((u) => u !== me)) {
      const link = el('a', '', `open as ${user}`);
      link.href = `/demo?user=${encodeURIComponent(user)}&meeting=${encodeURIComponent(meetingId)}`;
      link.target = '_blank';
      nav.append(link);
    }
  }
  $('board').hidden = false;
  const client = new GraphQLWs(
    `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/graphql`,
    token,
  );
  client.onState = (state, detail) => {
    $('link-state').dataset.state = state;
    $('link-state').textContent = detail ?? state;
  };
  setupSession(client, devMode ? me : null);
  setupApplause(client);
  setupPresence(client, me);
  setupNotify(client, me);
  setupChat(client, me);
}

/**
 * Refreshes the token before it expires, on the open socket: the server warns (TokenExpiring)
 * TOKEN_EXPIRY_WARNING_S ahead. A development page gets its new token from /demo/token; a page
 * opened with ?token= has no source of new tokens and shows when it will expire.
 */
function setupSession(client, devUser) {
  const state = $('session-state');
  let refreshedAt = 0;
  client.subscribe(
    'subscription DemoSession { session { __typename ... on TokenExpiring { expiresAt } ... on TokenRefreshed { expiresAt } } }',
    {},
    {
      next: async ({ session: event }) => {
        const until = clock(new Date(event.expiresAt));
        if (event.__typename === 'TokenRefreshed') {
          state.textContent = `session refreshed, until ${until}`;
          return;
        }
        if (!devUser) {
          state.textContent = `session expires at ${until}`;
          return;
        }
        // At most one refresh a minute, whatever the warning time is set to.
        if (Date.now() - refreshedAt < 60_000) return;
        refreshedAt = Date.now();
        try {
          const response = await fetch(`/demo/token?user=${encodeURIComponent(devUser)}`);
          const { token } = await response.json();
          await client.refresh(token);
          session.token = token;
        } catch (error) {
          state.textContent = `refresh failed: ${error.message}`;
        }
      },
    },
  );
}

main().catch((error) => {
  $('auth-needed').hidden = false;
  $('auth-error').textContent = error.message;
});
