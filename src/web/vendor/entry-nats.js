// What the dashboard uses of the official NATS JavaScript client: the WebSocket
// transport and the JWT authenticator for per-session credentials.
export { wsconnect, jwtAuthenticator, errors } from "@nats-io/nats-core";
