// Package gateway is Mercato's edge: it routes each public API operation to
// the service that owns it, in one hop and without translation, and applies
// what the edge owns — request ids, CORS, body limits, per-IP rate limits,
// access-token verification and each operation's OpenAPI security — and
// serves the OpenAPI document assembled from the services' parts. The
// operations in that document are exactly the routes the gateway accepts;
// anything else is a 404 problem at the edge.
package gateway
