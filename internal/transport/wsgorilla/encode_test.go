package wsgorilla

import (
	"encoding/json"
	"errors"
	"testing"
)

// Types of the shape gqlgen's protocol messages have (see encode.go), and some that
// only look like it.
type (
	msgType    string
	msgMessage struct {
		Payload json.RawMessage `json:"payload,omitempty"`
		ID      string          `json:"id,omitempty"`
		Type    msgType         `json:"type"`
		noOp    bool
	}
	jsonType    string
	jsonMessage struct {
		Payload json.RawMessage `json:"payload,omitempty"`
		ID      string          `json:"id,omitempty"`
		Type    jsonType        `json:"type"`
	}
	upperType    string
	upperMessage struct {
		Payload json.RawMessage `json:"payload,omitempty"`
		ID      string          `json:"id,omitempty"`
		Type    upperType       `json:"type"`
	}
	extraMessage struct {
		Payload json.RawMessage `json:"payload,omitempty"`
		ID      string          `json:"id,omitempty"`
		Type    msgType         `json:"type"`
		Extra   int             `json:"extra"`
	}
)

func (t msgType) MarshalText() ([]byte, error)   { return []byte(t), nil }
func (t jsonType) MarshalJSON() ([]byte, error)  { return []byte(`"x"`), nil }
func (t upperType) MarshalText() ([]byte, error) { return []byte("NEXT"), nil }

// appendMessage writes exactly what json.Marshal writes, or declines.
func TestAppendMessage(t *testing.T) {
	for _, tc := range []struct {
		name string
		v    any
		fast bool
	}{
		{"next", &msgMessage{Payload: json.RawMessage(`{"data":{"usageEvents":{"id":"ev_1","n":3,"ok":true,"at":"2026-12-01T03:00:00Z"}}}`), ID: "1", Type: "next"}, true},
		{"complete without payload", &msgMessage{ID: "sub-7", Type: "complete"}, true},
		{"ack without id", &msgMessage{Type: "connection_ack"}, true},
		{"empty type", &msgMessage{}, true},
		{"null payload", &msgMessage{Payload: json.RawMessage(`null`), ID: "1", Type: "next"}, true},
		{"payload with spaces", &msgMessage{Payload: json.RawMessage(`{"a": 1}`), ID: "1", Type: "next"}, false},
		{"payload with a space in a string", &msgMessage{Payload: json.RawMessage(`{"m":"rate limited"}`), ID: "1", Type: "error"}, false},
		{"payload with html", &msgMessage{Payload: json.RawMessage(`{"m":"<b>&"}`), ID: "1", Type: "next"}, false},
		{"payload with U+2028", &msgMessage{Payload: json.RawMessage("{\"m\":\"a\u2028b\"}"), ID: "1", Type: "next"}, false},
		{"payload with non-ASCII", &msgMessage{Payload: json.RawMessage(`{"m":"é"}`), ID: "1", Type: "next"}, true},
		{"id with quote", &msgMessage{ID: `a"b`, Type: "next"}, false},
		{"id with html", &msgMessage{ID: `a<b`, Type: "next"}, false},
		{"id with non-ASCII", &msgMessage{ID: "é", Type: "next"}, false},
		{"id with control", &msgMessage{ID: "a\nb", Type: "next"}, false},
		{"value, not pointer", msgMessage{ID: "1", Type: "next"}, false},
		{"nil pointer", (*msgMessage)(nil), false},
		{"nil", nil, false},
		{"type with MarshalJSON", &jsonMessage{ID: "1", Type: "next"}, false},
		{"type marshalled as another string", &upperMessage{ID: "1", Type: "next"}, false},
		{"exported extra field", &extraMessage{ID: "1", Type: "next"}, false},
		{"map", map[string]string{"type": "next"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, fast := appendMessage(nil, tc.v)
			if fast != tc.fast {
				t.Fatalf("fast path %v, want %v", fast, tc.fast)
			}
			if !fast {
				if len(got) != 0 {
					t.Fatalf("declined but wrote %q", got)
				}
				return
			}
			want, err := json.Marshal(tc.v)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(want) {
				t.Fatalf("wrote   %s\njson.Marshal %s", got, want)
			}
		})
	}
}

func TestWriteJSONFallsBack(t *testing.T) {
	// A value json.Marshal cannot encode still reports its error.
	c := &conn{}
	if err := c.WriteJSON(func() {}); err == nil {
		t.Fatal("WriteJSON of a func succeeded")
	} else {
		var ue *json.UnsupportedTypeError
		if !errors.As(err, &ue) {
			t.Fatalf("error %v, want json's UnsupportedTypeError", err)
		}
	}
}

// BenchmarkEncodeMessage compares the hand-written encoding of a subscription event
// with json.Marshal's.
func BenchmarkEncodeMessage(b *testing.B) {
	m := &msgMessage{ID: "1", Type: "next", Payload: json.RawMessage(`{"data":{"usageEvents":{"apiKeyId":"key_01JDX5Q2Z7Y8W9V0T1S2R3Q4P5","operationName":"GetKeys","operationType":"query","outcome":"OK","latencyMs":3,"ip":"203.0.113.9","at":"2026-12-01T03:00:00.123456Z"}}}`)}
	b.Run("hand", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := appendMessage(nil, m); !ok {
				b.Fatal("declined")
			}
		}
	})
	b.Run("json.Marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(m); err != nil {
				b.Fatal(err)
			}
		}
	})
}
