// Package identity is the identity service: customer accounts with argon2id
// passwords and saved addresses, sessions in Redis with rotating refresh
// tokens, and an OpenID Connect provider whose signed access tokens the
// gateway and the services verify.
package identity
