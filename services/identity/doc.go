// Package identity is the identity service: customer accounts with argon2id
// passwords and saved addresses, sessions in Redis with rotating refresh
// tokens, and an OpenID Connect provider whose signed access tokens the
// gateway and the services verify.
//
// Files by role: service.go wires the service; domain.go holds accounts and
// addresses and their rules; store.go keeps them in PostgreSQL (with the
// customer.registered event in the outbox); sessions.go keeps sessions,
// refresh tokens and revocations in Redis; keys.go rotates the RS256
// signing keys; tokens.go mints every token; storage.go, oidc.go and
// clients.go are the OpenID provider on zitadel/oidc; login.go is its login
// page; accounts.go and throttle.go check credentials and limit attempts;
// verify.go checks access tokens; api.go is the REST API and rpc.go the
// internal SessionService.
package identity
