// Package webhook delivers signed event notifications to tenants' endpoints, following
// the Standard Webhooks specification (https://www.standardwebhooks.com).
//
// The pieces:
//
//   - Secrets and signatures: NewSecret and Sign ("whsec_" secrets, "v1,<HMAC-SHA256>"
//     signatures over "msgID.timestamp.body", computed over the exact bytes sent).
//   - URL policy: ValidateURL refuses loopback, private, link-local, metadata and other
//     internal targets at creation; NewHTTPClient re-checks the address actually
//     connected to (DNS rebinding), never follows redirects and ignores proxies.
//   - Outbox: Enqueue writes one PENDING WebhookDelivery per subscribed webhook in the
//     transaction of the change, so a rolled-back change sends nothing and a committed
//     one is never lost; the Outbox's ent hook does so for key and tenant changes and
//     wakes the dispatchers after the commit.
//   - Dispatcher: claims due deliveries with a lease (FOR UPDATE SKIP LOCKED on
//     PostgreSQL), sends them outside the transaction, records every attempt as a
//     WebhookAttempt and retries on the Standard Webhooks schedule. Delivery is
//     at-least-once with the same webhook-id on every attempt. Workers are shared
//     fairly: limits per endpoint and per tenant, a reserve for tenants with nothing
//     in flight, and those tenants first when a worker frees.
//   - Manager: create, update, delete, rotate secrets, send tests and redeliver, under
//     the caller's privacy rules.
package webhook
