package ratelimit

import (
	"time"
)

// Period is a UTC calendar period of a quota.
type Period string

// The quota periods.
const (
	PeriodDay   Period = "day"
	PeriodMonth Period = "month"
)

// Valid reports whether p is a known period.
func (p Period) Valid() bool {
	return p == PeriodDay || p == PeriodMonth
}

// PeriodBounds returns the UTC start and end (exclusive) of the period containing t.
// It returns no error: for an unknown period both times are zero (check [Period.Valid]).
func PeriodBounds(p Period, t time.Time) (start, end time.Time) {
	t = t.UTC()
	y, m, d := t.Date()
	switch p {
	case PeriodDay:
		return time.Date(y, m, d, 0, 0, 0, 0, time.UTC), time.Date(y, m, d+1, 0, 0, 0, 0, time.UTC)
	case PeriodMonth:
		return time.Date(y, m, 1, 0, 0, 0, 0, time.UTC), time.Date(y, m+1, 1, 0, 0, 0, 0, time.UTC)
	}
	return time.Time{}, time.Time{}
}

// QuotaResult is the state of a quota after one Consume or Peek.
type QuotaResult struct {
	Allowed   bool
	Used      int64     // units used in the current period, including this request if allowed
	Remaining int64     // limit - Used, never negative
	ResetAt   time.Time // end of the current period
}
