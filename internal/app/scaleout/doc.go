// Package scaleout holds an end-to-end test of Latchkey running as more than one
// instance: it builds the real server binary, starts two processes on their own ports
// against one fresh PostgreSQL database and one Redis, and checks through the public
// HTTP and WebSocket API only that the two behave as one service:
//
//   - a key's rate limit is shared exactly (Redis);
//   - a usage subscription on one instance sees operations served by the other
//     (PostgreSQL LISTEN/NOTIFY);
//   - webhook deliveries queued through both instances are each sent exactly once
//     while both dispatchers run;
//   - a key revoked on one instance is refused by the other within a second;
//   - SIGTERM drains both instances, so the stored usage rows equal the operations
//     answered.
//
// The package has no non-test code. It needs PostgreSQL (TEST_POSTGRES_URL, default
// the local trust-auth server) and Redis (TEST_REDIS_URL, default
// redis://127.0.0.1:6379/0); when either cannot be reached the test fails, it never
// skips. The servers' output is printed when the test fails, or always with
// SCALEOUT_LOGS=1.
package scaleout
