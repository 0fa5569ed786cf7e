import { randomBytes } from 'node:crypto';
import {
  createRemoteJWKSet,
  errors,
  type JWSAlgorithm,
  type JWTPayload,
  type JWTVerifyOptions,
  jwtVerify,
  SignJWT,
} from 'jose';
import { type AppError, isAppError, unauthenticated } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { isLoopback } from './loopback.ts';
import { createTokenCache } from './token-cache.ts';
import type { Viewer } from './viewer.ts';

/** Options for {@link createAuthenticator}. */
export interface AuthenticatorOptions {
  /** HS256 shared secret (AUTH_TOKEN_KEY / AUTH_TOKEN_KEY_FILE). Its UTF-8 bytes are the key. */
  tokenKey?: string | undefined;
  /** URL of a JSON Web Key Set (AUTH_JWKS_URL); tokens must then use an asymmetric algorithm. */
  jwksUrl?: string | undefined;
  /**
   * The address the server listens on (HOST). Without `tokenKey` and `jwksUrl` a random key is
   * generated only when this is loopback (or unset, for tools and tests that do not listen) and
   * `production` is false; otherwise creation throws an Error naming AUTH_TOKEN_KEY.
   */
  listenHost?: string | undefined;
  /** NODE_ENV=production: never generate a key. */
  production?: boolean | undefined;
  /** When set, every request without a token is this user. Development only. */
  fakeUser?: string | undefined;
  /**
   * Uses up a single-use ws token (createWsToken) and returns its viewer, or throws. When set, a
   * `?token=` on a WebSocket URL that is not a JWT is taken as a ws token by
   * `fromConnectionParams` (the /graphql socket), as it is on chatter's socket.
   */
  consumeWsToken?: ((token: string) => Promise<Viewer>) | undefined;
  /** When set, tokens must carry this `iss`; `sign` sets it. */
  issuer?: string | undefined;
  /** When set, tokens must carry this `aud`; `sign` sets it. */
  audience?: string | undefined;
  /**
   * HS256 tokens that verified are remembered (keyed by the token) until their `exp`, at most
   * this many, least recently used evicted first (AUTH_TOKEN_CACHE_SIZE). 0 turns it off.
   * Default {@link DEFAULT_TOKEN_CACHE_SIZE}. JWKS tokens are always verified in full.
   */
  tokenCacheSize?: number | undefined;
  /** The clock in ms (tests move it); default Date.now. */
  now?: (() => number) | undefined;
  logger: Logger;
}

/** Claims accepted by {@link Authenticator.sign}. */
export interface SignClaims {
  /** The user id (`sub`). */
  sub: string;
  /** Chat group (`group` claim). */
  group?: string | undefined;
  /** Adds `scope: "service"`, marking a connector. Default false. */
  service?: boolean | undefined;
  /** Lifetime in seconds. Default 3600. */
  ttlSeconds?: number | undefined;
}

/** Where a request's headers and URL come from (a Fetch Request or a Node IncomingMessage). */
export interface RequestInput {
  headers: Headers | Record<string, string | string[] | undefined>;
  /** Absolute URL or a path like `/graphql?token=...` (as in `IncomingMessage.url`). */
  url?: string | URL | undefined;
  /**
   * The URL is a stream's (an SSE or JSON-lines stream, a WebSocket upgrade): `?token=` is read.
   * Requests with `Accept: text/event-stream` or `Upgrade: websocket` count as streams too. On
   * any other request a `?token=` is refused (tokens in URLs end up in logs and histories).
   */
  stream?: boolean | undefined;
}

/** Verifies tokens and turns requests and graphql-ws connection params into a {@link Viewer}. */
export interface Authenticator {
  /**
   * `true` when neither a key nor a JWKS URL was configured and a random HS256 key was made
   * at creation; tokens then only live as long as this process. See `generatedTokenKey`.
   */
  readonly generatedKey: boolean;
  /**
   * The generated secret (base64url of 32 random bytes) when `generatedKey` is true, so the
   * server can show it (usable as AUTH_TOKEN_KEY); `null` otherwise. A configured key is
   * never exposed.
   */
  readonly generatedTokenKey: string | null;
  /**
   * Verifies a compact JWT and returns its viewer. `exp` is required, `nbf` honoured, clock
   * tolerance 5 s. Throws AppError UNAUTHENTICATED with a short reason (never the token).
   */
  verify(token: string): Promise<Viewer>;
  /**
   * Viewer of an HTTP request. The token is taken from `Authorization: Bearer <t>`, then
   * `Authentication: bearer <t>` (OpenSlides 4), then `?token=` on the URL of a stream or
   * WebSocket (see `RequestInput.stream`; elsewhere `?token=` is refused). No token: the fake
   * user if configured, else `null` (anonymous). A token that fails: throws.
   */
  fromRequest(input: RequestInput): Promise<Viewer | null>;
  /**
   * Viewer of a graphql-ws `connection_init` payload: `authorization` / `Authorization`
   * ("Bearer <t>" or the bare token), `token`, or `headers.authorization`; falls back to
   * `?token=` on the upgrade URL: a JWT, or a single-use ws token (see `consumeWsToken`), used
   * up here. Same null / fake user / throw rules as `fromRequest`.
   */
  fromConnectionParams(params: unknown, url?: string | URL): Promise<Viewer | null>;
  /**
   * Mints an HS256 token (with `iat`, `exp`, and `iss`/`aud` when configured). Only works
   * with an HS256 key (configured or generated); throws an Error with a JWKS setup.
   */
  sign(claims: SignClaims): Promise<string>;
}

/** Allowed skew between our clock and the issuer's for exp/nbf/iat. */
const CLOCK_TOLERANCE_S = 5;
/** Tokens longer than this are refused before any parsing (real ones are < 2 KiB). */
const MAX_TOKEN_LENGTH = 16 * 1024;
const DEFAULT_TTL_S = 3600;
/** Verified HS256 tokens kept by default: at most 10 000 x 2 KiB of token text. */
export const DEFAULT_TOKEN_CACHE_SIZE = 10_000;
/** Asymmetric algorithms only: an HMAC token must never be checked against a public key. */
const JWKS_ALGORITHMS: JWSAlgorithm[] = [
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
  'ES256',
  'ES384',
  'ES512',
  'EdDSA',
  'Ed25519',
];

type RemoteKeys = ReturnType<typeof createRemoteJWKSet>;

/** The HS256 secret as a WebCrypto key, imported once (jose would import raw bytes per call). */
function importHmacKey(secret: Uint8Array<ArrayBuffer>): Promise<CryptoKey> {
  return crypto.subtle.importKey('raw', secret, { name: 'HMAC', hash: 'SHA-256' }, false, [
    'sign',
    'verify',
  ]);
}

/**
 * Creates the authenticator. Normally exactly one of `tokenKey` / `jwksUrl` is set (if both
 * are, an Error is thrown). With neither, a random 32-byte HS256
 * key is generated (`generatedKey: true`). `fakeUser` logs a warning once, here.
 */
export function createAuthenticator(options: AuthenticatorOptions): Authenticator {
  const { logger, issuer, audience } = options;
  const fakeUser = options.fakeUser === '' ? undefined : options.fakeUser;
  if (options.tokenKey !== undefined && options.jwksUrl !== undefined) {
    throw new Error('Set either AUTH_TOKEN_KEY(_FILE) or AUTH_JWKS_URL, not both');
  }
  if (options.tokenKey === '') throw new Error('AUTH_TOKEN_KEY is empty');

  let generatedTokenKey: string | null = null;
  let secret: Promise<CryptoKey> | null = null;
  let remoteKeys: RemoteKeys | null = null;
  let algorithms: JWSAlgorithm[];
  if (options.jwksUrl !== undefined) {
    let url: URL;
    try {
      url = new URL(options.jwksUrl);
    } catch {
      throw new Error('AUTH_JWKS_URL is not a valid URL');
    }
    // jose caches the key set (refetching on an unknown kid); it never caches a verdict.
    remoteKeys = createRemoteJWKSet(url);
    algorithms = JWKS_ALGORITHMS;
  } else {
    if (options.tokenKey === undefined) {
      if (options.production === true) {
        throw new Error('AUTH_TOKEN_KEY (or AUTH_JWKS_URL) is required with NODE_ENV=production');
      }
      if (options.listenHost !== undefined && !isLoopback(options.listenHost)) {
        throw new Error(
          `AUTH_TOKEN_KEY (or AUTH_JWKS_URL) is required to listen on ${options.listenHost}: a development key is generated only on loopback`,
        );
      }
      generatedTokenKey = randomBytes(32).toString('base64url');
    }
    const keyText = options.tokenKey ?? (generatedTokenKey as string);
    const bytes = new TextEncoder().encode(keyText);
    if (bytes.byteLength < 32) {
      logger.warn('AUTH_TOKEN_KEY is shorter than 32 bytes; use a longer random secret');
    }
    secret = importHmacKey(bytes);
    // Refused here only if used: a failed import shows up as a refused token (logged).
    secret.catch(() => {});
    algorithms = ['HS256'];
  }

  if (fakeUser !== undefined) {
    logger.warn(
      { fakeUser },
      'AUTH_FAKE_USER is set: every request without a token is this user. DEVELOPMENT ONLY, never use it in production',
    );
  }

  const now = options.now ?? Date.now;
  const baseVerifyOptions: JWTVerifyOptions = {
    algorithms,
    clockTolerance: CLOCK_TOLERANCE_S,
    requiredClaims: ['exp'],
    ...(issuer !== undefined ? { issuer } : {}),
    ...(audience !== undefined ? { audience } : {}),
  };
  // Only HS256: the key cannot change while the process runs, so a verdict holds until exp.
  const cache = createTokenCache(
    secret === null ? 0 : (options.tokenCacheSize ?? DEFAULT_TOKEN_CACHE_SIZE),
  );

  async function verify(token: string): Promise<Viewer> {
    if (typeof token !== 'string' || token.length === 0) throw unauthenticated('empty token');
    if (token.length > MAX_TOKEN_LENGTH) throw unauthenticated('token too large');
    const cached = cache.get(token, now());
    if (cached !== undefined) return cached;
    const verifyOptions: JWTVerifyOptions =
      options.now === undefined
        ? baseVerifyOptions
        : { ...baseVerifyOptions, currentDate: new Date(now()) };
    let payload: JWTPayload;
    try {
      // Two call shapes because jose overloads on the key type.
      const result =
        remoteKeys !== null
          ? await jwtVerify(token, remoteKeys, verifyOptions)
          : await jwtVerify(token, await (secret as Promise<CryptoKey>), verifyOptions);
      payload = result.payload;
    } catch (error) {
      const appError = toAppError(error, logger, remoteKeys !== null);
      logger.debug({ reason: appError.message }, 'token refused');
      throw appError;
    }
    // Frozen: one cached viewer is shared by every request carrying the same token.
    const viewer = Object.freeze(viewerFromPayload(payload));
    cache.set(token, viewer, now());
    return viewer;
  }

  async function resolve(token: string | undefined): Promise<Viewer | null> {
    if (token !== undefined) return verify(token);
    if (fakeUser !== undefined) {
      return { userId: fakeUser, group: null, isService: false, expiresAt: null };
    }
    return null;
  }

  return {
    generatedKey: generatedTokenKey !== null,
    generatedTokenKey,
    verify,
    // async so that extraction errors reject the promise instead of throwing synchronously.
    fromRequest: async (input) => resolve(tokenFromRequest(input)),
    async fromConnectionParams(params, url) {
      const fromParams = tokenFromConnectionParams(params);
      if (fromParams !== undefined) return verify(fromParams);
      const query = queryToken(url);
      if (query !== undefined && !isJwtShaped(query) && options.consumeWsToken) {
        try {
          return await options.consumeWsToken(query);
        } catch (error) {
          logger.debug({ reason: (error as Error).message }, 'ws token refused');
          throw unauthenticated('invalid, used or expired ws token');
        }
      }
      return resolve(query);
    },
    async sign(claims) {
      if (secret === null) {
        throw new Error(
          'Cannot sign tokens with AUTH_JWKS_URL: tokens come from the identity provider',
        );
      }
      const ttl = claims.ttlSeconds ?? DEFAULT_TTL_S;
      if (!Number.isFinite(ttl) || ttl <= 0) throw new Error('ttlSeconds must be positive');
      if (claims.sub === '') throw new Error('sub must not be empty');
      const body: { group?: string; scope?: string } = {};
      if (claims.group !== undefined) body.group = claims.group;
      if (claims.service === true) body.scope = 'service';
      const issuedAt = Math.floor(now() / 1000);
      const jwt = new SignJWT(body)
        .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
        .setSubject(claims.sub)
        .setIssuedAt(issuedAt)
        .setExpirationTime(issuedAt + Math.ceil(ttl));
      if (issuer !== undefined) jwt.setIssuer(issuer);
      if (audience !== undefined) jwt.setAudience(audience);
      return jwt.sign(await secret);
    },
  };
}

/** The claims we read; values are `unknown` because the issuer may send anything. */
interface SwitchboardClaims {
  sub?: unknown;
  exp?: unknown;
  userId?: unknown;
  group?: unknown;
  scope?: unknown;
}

/** Builds the viewer from verified claims; refuses tokens without a usable user id. */
function viewerFromPayload(payload: JWTPayload): Viewer {
  const claims: SwitchboardClaims = payload;
  let userId: string | undefined;
  const sub = claims.sub;
  const osUserId = claims.userId;
  if (typeof sub === 'string' && sub !== '') userId = sub;
  else if (typeof sub === 'number' && Number.isFinite(sub)) userId = String(sub);
  else if (sub === undefined && typeof osUserId === 'number' && Number.isSafeInteger(osUserId)) {
    // OpenSlides 4 access tokens carry the user as an integer `userId`; 0 means anonymous.
    if (osUserId > 0) userId = String(osUserId);
  }
  if (userId === undefined) throw unauthenticated('token has no subject');
  // A user id must be storable and comparable: no U+0000, no lone surrogate.
  if (userId.includes('\u0000') || /\p{Cs}/u.test(userId)) {
    throw unauthenticated('invalid subject');
  }
  // jose checks that exp is a number; 1e999 parses as Infinity, a token that never expires.
  if (typeof claims.exp !== 'number' || !Number.isFinite(claims.exp)) {
    throw unauthenticated('token has no valid expiry');
  }

  const group = claims.group;
  if (
    group !== undefined &&
    group !== null &&
    (typeof group !== 'string' || group.includes('\u0000') || /\p{Cs}/u.test(group))
  ) {
    throw unauthenticated('invalid group claim');
  }

  const scope = claims.scope;
  const scopes =
    typeof scope === 'string'
      ? scope.split(/\s+/)
      : Array.isArray(scope)
        ? scope.filter((s): s is string => typeof s === 'string')
        : [];

  return {
    userId,
    group: typeof group === 'string' ? group : null,
    isService: scopes.includes('service'),
    expiresAt: claims.exp * 1000,
  };
}

/** Maps jose failures to short client-facing messages; unexpected ones are logged. */
function toAppError(error: unknown, logger: Logger, remoteKeys: boolean): AppError {
  if (isAppError(error)) return error;
  if (error instanceof errors.JWTExpired) return unauthenticated('token expired');
  if (error instanceof errors.JWTClaimValidationFailed) {
    if (error.claim === 'exp') return unauthenticated('token has no valid expiry');
    if (error.claim === 'nbf') return unauthenticated('token not yet valid');
    if (error.claim === 'iat') return unauthenticated('token issued in the future');
    if (error.claim === 'iss') return unauthenticated('token issuer not accepted');
    if (error.claim === 'aud') return unauthenticated('token audience not accepted');
    return unauthenticated('invalid token claims');
  }
  if (error instanceof errors.JWSSignatureVerificationFailed) {
    return unauthenticated('invalid token signature');
  }
  if (error instanceof errors.JOSEAlgNotAllowed || error instanceof errors.JOSENotSupported) {
    return unauthenticated('token algorithm not allowed');
  }
  if (error instanceof errors.JWKSNoMatchingKey) return unauthenticated('no matching token key');
  if (error instanceof errors.JWSInvalid || error instanceof errors.JWTInvalid) {
    return unauthenticated('malformed token');
  }
  if (remoteKeys) {
    // Timeouts, non-200 answers, bad JSON, network errors: the key set, not the token, failed.
    logger.error({ err: error }, 'JWKS problem while verifying a token');
    return unauthenticated('token keys unavailable');
  }
  // Anything else (bad key material): our problem, but still a refusal.
  logger.error({ err: error }, 'unexpected error while verifying a token');
  return unauthenticated('invalid token');
}

const BEARER = /^bearer[ \t]+(\S+)[ \t]*$/i;

/** Extracts the token of a `Bearer <t>` header value; any other scheme is ignored. */
function bearerToken(value: string | undefined, header: string): string | undefined {
  if (value === undefined) return undefined;
  const trimmed = value.trim();
  if (!/^bearer(\s|$)/i.test(trimmed)) return undefined;
  const match = BEARER.exec(trimmed);
  if (match === null) throw unauthenticated(`malformed ${header} header`);
  return match[1];
}

/** Reads one header from a Headers object or a Node-style record, case-insensitively. */
function headerValue(headers: RequestInput['headers'], name: string): string | undefined {
  // Duck-typed: yoga/whatwg-node may hand us a ponyfilled Headers that is not the global class.
  if (typeof (headers as Partial<Headers>).get === 'function') {
    return (headers as Headers).get(name) ?? undefined;
  }
  const record = headers as Record<string, string | string[] | undefined>;
  for (const key of Object.keys(record)) {
    if (key.toLowerCase() !== name) continue;
    const value = record[key];
    if (Array.isArray(value)) {
      // Two credentials in one request are ambiguous; refuse rather than pick one.
      if (value.length > 1) throw unauthenticated(`multiple ${name} headers`);
      return value[0];
    }
    return value;
  }
  return undefined;
}

/** `?token=` of an absolute URL or a request path; empty counts as absent. */
function queryToken(url: string | URL | undefined): string | undefined {
  if (url === undefined) return undefined;
  let parsed: URL;
  try {
    parsed = typeof url === 'string' ? new URL(url, 'http://localhost') : url;
  } catch {
    return undefined;
  }
  const token = parsed.searchParams.get('token');
  return token === null || token === '' ? undefined : token;
}

/** Whether `?token=` may identify this request: an SSE stream or a WebSocket upgrade. */
function isStream(input: RequestInput): boolean {
  if (input.stream === true) return true;
  const upgrade = headerValue(input.headers, 'upgrade');
  if (upgrade !== undefined && upgrade.toLowerCase() === 'websocket') return true;
  const accept = headerValue(input.headers, 'accept');
  return accept?.toLowerCase().includes('text/event-stream') === true;
}

function tokenFromRequest(input: RequestInput): string | undefined {
  const header =
    bearerToken(headerValue(input.headers, 'authorization'), 'Authorization') ??
    bearerToken(headerValue(input.headers, 'authentication'), 'Authentication');
  if (header !== undefined) return header;
  const query = queryToken(input.url);
  if (query !== undefined && !isStream(input)) {
    throw unauthenticated(
      '?token= is accepted only on SSE and WebSocket URLs; send Authorization: Bearer <token>',
    );
  }
  return query;
}

/** A connection param value: "Bearer <t>" or a bare token. */
function paramToken(value: unknown, name: string): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string') throw unauthenticated(`invalid ${name} connection param`);
  const trimmed = value.trim();
  if (trimmed === '') throw unauthenticated(`empty ${name} connection param`);
  const bearer = bearerToken(trimmed, name);
  if (bearer !== undefined) return bearer;
  if (/\s/.test(trimmed)) throw unauthenticated(`malformed ${name} connection param`);
  return trimmed;
}

/** The connection_init payload keys that may carry a token. */
interface ConnectionParams {
  authorization?: unknown;
  Authorization?: unknown;
  token?: unknown;
  headers?: unknown;
}

/** A compact JWS has three dot-separated parts; a ws token has none. */
const isJwtShaped = (token: string) => token.split('.').length === 3;

/** The token of a connection_init payload, if it carries one. */
function tokenFromConnectionParams(params: unknown): string | undefined {
  if (params !== null && typeof params === 'object' && !Array.isArray(params)) {
    const p: ConnectionParams = params;
    // Some clients (Apollo style) nest the header: { headers: { Authorization } }.
    const nested: ConnectionParams =
      p.headers !== null && typeof p.headers === 'object' && !Array.isArray(p.headers)
        ? p.headers
        : {};
    const token =
      paramToken(p.authorization, 'authorization') ??
      paramToken(p.Authorization, 'Authorization') ??
      paramToken(p.token, 'token') ??
      paramToken(nested.authorization ?? nested.Authorization, 'authorization');
    if (token !== undefined) return token;
  }
  return undefined;
}
