// Package limitspec holds the value types of limits that are stored with keys and
// plans and shown in the API: named limits. It has no behaviour; the domain applies
// them (internal/domain/admission) and the data floor stores them.
package limitspec

// Named is a named rate limit: Limit units per WindowSeconds, charged by the
// verifications that name it (e.g. "tokens" 10,000 per day beside "requests" 100 per
// second).
type Named struct {
	Name          string `json:"name"`
	Limit         int    `json:"limit"`
	WindowSeconds int    `json:"windowSeconds"`
}

// Charge is what one verification charges a named limit.
type Charge struct {
	Name string `json:"name"`
	Cost int    `json:"cost"`
}
