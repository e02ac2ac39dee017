// Package scaleout holds an end-to-end test of Latchkey running as more than one
// instance: it builds the real server binary, starts three processes on their own
// ports against one fresh PostgreSQL database and one Redis, and checks through the
// public HTTP and WebSocket API only that the three behave as one service:
//
//   - a key's rate limit is shared exactly (Redis);
//   - a usage subscription on one instance sees operations served by the others
//     (the Redis bus), also once usage events are published only for watched tenants;
//   - webhook deliveries queued through every instance are each sent exactly once
//     while all dispatchers run;
//   - a key revoked on one instance is refused by the others within a second;
//   - SIGTERM drains every instance, so the stored usage rows equal the operations
//     answered.
//
// The package has no non-test code. It needs PostgreSQL (TEST_POSTGRES_URL, default
// the local trust-auth server) and Redis (TEST_REDIS_URL, default
// redis://127.0.0.1:6379/0); when either cannot be reached the test fails, it never
// skips. The servers' output is printed when the test fails, or always with
// SCALEOUT_LOGS=1.
package scaleout
