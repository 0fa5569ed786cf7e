export {
  type Authenticator,
  type AuthenticatorOptions,
  createAuthenticator,
  type RequestInput,
  type SignClaims,
} from './authenticator.ts';
export { isLoopback } from './loopback.ts';
export type { Viewer } from './viewer.ts';
