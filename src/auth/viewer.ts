/**
 * Who is making a request, as established by a verified token (or AUTH_FAKE_USER).
 * An anonymous caller has no Viewer at all (`null`), never a Viewer with an empty id.
 */
export interface Viewer {
  /** The user id: the token's `sub`, or OpenSlides' integer `userId` claim as a string. */
  userId: string;
  /** The chat group from the `group` claim, or `null` when the token has none. */
  group: string | null;
  /** `true` when the `scope` claim contains `service` (connectors pushing data/events). */
  isService: boolean;
  /**
   * When the token expires, in milliseconds since the epoch (from `exp`). Live connections
   * are closed at this time. `null` only for the fake development user, which never expires.
   */
  expiresAt: number | null;
}
