package ratelimit

import (
	"testing"
	"time"
)

func TestPeriodBounds(t *testing.T) {
	plus5 := time.FixedZone("+05", 5*3600)
	cases := []struct {
		name       string
		p          Period
		t          time.Time
		start, end string
	}{
		{"day, midday", PeriodDay, utc("2026-03-14T15:09:26Z"), "2026-03-14T00:00:00Z", "2026-03-15T00:00:00Z"},
		{"day, at its start", PeriodDay, utc("2026-03-14T00:00:00Z"), "2026-03-14T00:00:00Z", "2026-03-15T00:00:00Z"},
		{"day, last nanosecond", PeriodDay, utc("2026-03-14T23:59:59.999999999Z"), "2026-03-14T00:00:00Z", "2026-03-15T00:00:00Z"},
		{"day, month end", PeriodDay, utc("2026-04-30T12:00:00Z"), "2026-04-30T00:00:00Z", "2026-05-01T00:00:00Z"},
		{"day, year end", PeriodDay, utc("2025-12-31T23:00:00Z"), "2025-12-31T00:00:00Z", "2026-01-01T00:00:00Z"},
		{"day, leap day", PeriodDay, utc("2028-02-29T08:00:00Z"), "2028-02-29T00:00:00Z", "2028-03-01T00:00:00Z"},
		{"day, other zone is UTC's previous day", PeriodDay, time.Date(2026, 3, 15, 2, 0, 0, 0, plus5), "2026-03-14T00:00:00Z", "2026-03-15T00:00:00Z"},
		{"month, middle", PeriodMonth, utc("2026-03-14T15:09:26Z"), "2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z"},
		{"month, first instant", PeriodMonth, utc("2026-03-01T00:00:00Z"), "2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z"},
		{"month, 31st", PeriodMonth, utc("2026-01-31T23:59:59.999999999Z"), "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"},
		{"month, 30-day month", PeriodMonth, utc("2026-04-30T10:00:00Z"), "2026-04-01T00:00:00Z", "2026-05-01T00:00:00Z"},
		{"month, December to January", PeriodMonth, utc("2025-12-31T23:59:59Z"), "2025-12-01T00:00:00Z", "2026-01-01T00:00:00Z"},
		{"month, leap February", PeriodMonth, utc("2028-02-29T23:00:00Z"), "2028-02-01T00:00:00Z", "2028-03-01T00:00:00Z"},
		{"month, common February", PeriodMonth, utc("2027-02-28T23:00:00Z"), "2027-02-01T00:00:00Z", "2027-03-01T00:00:00Z"},
		{"month, century not leap", PeriodMonth, utc("2100-02-28T00:00:00Z"), "2100-02-01T00:00:00Z", "2100-03-01T00:00:00Z"},
		{"month, other zone is UTC's previous month", PeriodMonth, time.Date(2026, 4, 1, 3, 0, 0, 0, plus5), "2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			start, end := PeriodBounds(c.p, c.t)
			if !start.Equal(utc(c.start)) || !end.Equal(utc(c.end)) || start.Location() != time.UTC || end.Location() != time.UTC {
				t.Fatalf("PeriodBounds(%s, %v) = %v, %v; want %s, %s", c.p, c.t, start, end, c.start, c.end)
			}
		})
	}
	if s, e := PeriodBounds("week", epoch); !s.IsZero() || !e.IsZero() {
		t.Fatalf("unknown period: %v, %v", s, e)
	}
}

// quotaImpls returns the quota implementations to run a behaviour test against, all on
// the given clock.
