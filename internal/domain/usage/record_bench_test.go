package usage

import (
	"testing"
	"time"
)

// benchRecorder returns a Recorder whose queue is consumed (and discarded) by a
// goroutine, so that Record measures the enqueue, not the drop path.
func benchRecorder(b *testing.B) *Recorder {
	r := NewRecorder(nil, Config{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range r.ch {
		}
	}()
	b.Cleanup(func() {
		close(r.ch)
		<-done
	})
	return r
}

var benchEvent = Event{
	TenantID: "ten_01JD0000000000000000000000", APIKeyID: "key_01JD0000000000000000000000",
	OperationName: "GetKeys", OperationType: "query", RootFields: []string{"apiKeys"},
	Outcome: OutcomeOK, LatencyMs: 12, IP: "203.0.113.9", At: time.Now(),
}

// BenchmarkRecord is the request-path cost of Record: one enqueue, no allocation.
func BenchmarkRecord(b *testing.B) {
	r := benchRecorder(b)
	b.ReportAllocs()
	for b.Loop() {
		r.Record(benchEvent)
	}
	// The single discarding consumer cannot always keep up; the share of calls that
	// took the (cheaper) drop path is reported.
	s := r.Stats()
	b.ReportMetric(float64(s.Dropped)/float64(s.Recorded+s.Dropped), "dropped/op")
}

// BenchmarkRecordFull is Record on a full queue (the drop path, BlockTimeout 0).
func BenchmarkRecordFull(b *testing.B) {
	r := NewRecorder(nil, Config{BufferSize: 1})
	r.Record(benchEvent)
	b.ReportAllocs()
	for b.Loop() {
		r.Record(benchEvent)
	}
}

func TestRecordDoesNotAllocate(t *testing.T) {
	r := NewRecorder(nil, Config{BufferSize: 1, OnEvent: func(Event) {}})
	ev := benchEvent
	if n := testing.AllocsPerRun(100, func() {
		select {
		case <-r.ch:
		default:
		}
		r.Record(ev)
	}); n != 0 {
		t.Errorf("Record allocates %v times per call", n)
	}
}
