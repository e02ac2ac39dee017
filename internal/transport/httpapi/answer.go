package httpapi

import (
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// The verification answer is written on every verification: encoding/json's reflection
// over it was 7-8% of the server's CPU under load. appendJSON writes the same bytes as
// encoding/json (checked field by field in answer_test.go) without reflection; only the
// free-form maps (meta, ownerMeta) and strings that need escaping still go through
// encoding/json.

var answerBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// writeAnswer writes a as the 200 answer of a verification.
func writeAnswer(w http.ResponseWriter, a *verifyAnswer) {
	writeJSONHeader(w, http.StatusOK)
	bp := answerBufs.Get().(*[]byte)
	b := append(a.appendJSON((*bp)[:0]), '\n')
	_, _ = w.Write(b)
	*bp = b[:0]
	answerBufs.Put(bp)
}

// appendJSON appends a as encoding/json would encode it (without the newline).
func (a *verifyAnswer) appendJSON(b []byte) []byte {
	b = append(b, `{"valid":`...)
	b = strconv.AppendBool(b, a.Valid)
	b = append(b, `,"code":`...)
	b = appendString(b, string(a.Code))
	b = append(b, `,"keyId":`...)
	b = appendStringPtr(b, a.KeyID)
	b = append(b, `,"ownerId":`...)
	b = appendStringPtr(b, a.OwnerID)
	b = append(b, `,"name":`...)
	b = appendStringPtr(b, a.Name)
	b = append(b, `,"meta":`...)
	b = appendMap(b, a.Meta)
	b = append(b, `,"permissions":`...)
	if a.Permissions == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i, p := range a.Permissions {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, p)
		}
		b = append(b, ']')
	}
	b = append(b, `,"environment":`...)
	if a.Environment == nil {
		b = append(b, "null"...)
	} else {
		b = appendString(b, string(*a.Environment))
	}
	b = append(b, `,"expiresAt":`...)
	if a.ExpiresAt == nil {
		b = append(b, "null"...)
	} else {
		b = appendTime(b, *a.ExpiresAt)
	}
	b = append(b, `,"rateLimit":`...)
	if l := a.RateLimit; l == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, `{"limit":`...)
		b = strconv.AppendInt(b, int64(l.Limit), 10)
		b = append(b, `,"remaining":`...)
		b = strconv.AppendInt(b, int64(l.Remaining), 10)
		b = append(b, `,"resetAt":`...)
		b = appendTime(b, l.ResetAt)
		b = append(b, '}')
	}
	b = append(b, `,"quota":`...)
	if q := a.Quota; q == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, `{"limit":`...)
		b = strconv.AppendInt(b, q.Limit, 10)
		b = append(b, `,"used":`...)
		b = strconv.AppendInt(b, q.Used, 10)
		b = append(b, `,"remaining":`...)
		b = strconv.AppendInt(b, q.Remaining, 10)
		b = append(b, `,"resetAt":`...)
		b = appendTime(b, q.ResetAt)
		b = append(b, '}')
	}
	b = append(b, `,"retryAfterSeconds":`...)
	if a.RetryAfterSeconds == nil {
		b = append(b, "null"...)
	} else {
		b = strconv.AppendInt(b, int64(*a.RetryAfterSeconds), 10)
	}
	b = append(b, `,"limitScope":`...)
	b = appendStringPtr(b, a.LimitScope)
	b = append(b, `,"credits":`...)
	if a.Credits == nil {
		b = append(b, "null"...)
	} else {
		b = strconv.AppendInt(b, *a.Credits, 10)
	}
	b = append(b, `,"ownerMeta":`...)
	b = appendMap(b, a.OwnerMeta)
	return append(b, '}')
}

func appendStringPtr(b []byte, s *string) []byte {
	if s == nil {
		return append(b, "null"...)
	}
	return appendString(b, *s)
}

// appendString appends s as a JSON string: as it is when no byte needs escaping
// (printable ASCII other than the quote, the backslash and the HTML characters
// encoding/json escapes), through encoding/json otherwise.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			enc, _ := json.Marshal(s) // a string always encodes
			return append(b, enc...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// appendTime appends t as time.Time's MarshalJSON does for the years 0-9999.
func appendTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

// appendMap appends m through encoding/json (null for a nil map), or null if it cannot
// be encoded (it was decoded from JSON, so it always can).
func appendMap(b []byte, m map[string]any) []byte {
	if m == nil {
		return append(b, "null"...)
	}
	enc, err := json.Marshal(m)
	if err != nil {
		return append(b, "null"...)
	}
	return append(b, enc...)
}
