package wsgorilla

import (
	"encoding"
	"encoding/json"
	"reflect"
	"slices"
	"sync"
)

// gqlgen hands WriteJSON its protocol messages as values of unexported types, both
// of one shape:
//
//	*struct {
//		Payload json.RawMessage `json:"payload,omitempty"`
//		ID      string          `json:"id,omitempty"`
//		Type    <string type>   `json:"type"` // MarshalText returns the string
//		...unexported fields
//	}
//
// encoding/json spends a live subscription's delivery on reflection and on
// compacting the payload it already holds as JSON (about a tenth of the server's CPU per
// delivery in the fan-out load test). appendMessage writes such a message by hand
// when the result is byte for byte what json.Marshal writes, and reports false
// otherwise (any other type or shape, a payload or string that json.Marshal would
// change: whitespace, '<', '>', '&', U+2028/U+2029, control characters, quotes or
// backslashes in the id or type), so that the caller falls back to json.Marshal.
//
// It trusts the payload to be valid JSON, as gqlgen produced it with encoding/json;
// json.Marshal would have checked.

// messageShapes caches, per reflect.Type, whether it has the shape above.
var messageShapes sync.Map // reflect.Type → bool

var rawMessageType = reflect.TypeFor[json.RawMessage]()

// isMessageShape reports whether t is a pointer to a struct of the shape above whose
// type field marshals as its own string.
func isMessageShape(t reflect.Type) bool {
	if ok, found := messageShapes.Load(t); found {
		return ok.(bool)
	}
	ok := checkMessageShape(t)
	messageShapes.Store(t, ok)
	return ok
}

func checkMessageShape(t reflect.Type) bool {
	if t.Kind() != reflect.Pointer || t.Elem().Kind() != reflect.Struct {
		return false
	}
	s := t.Elem()
	if s.NumField() < 3 {
		return false
	}
	want := []struct {
		name, tag string
		ok        func(reflect.Type) bool
	}{
		{"Payload", "payload,omitempty", func(f reflect.Type) bool { return f == rawMessageType }},
		{"ID", "id,omitempty", func(f reflect.Type) bool { return f == reflect.TypeFor[string]() }},
		{"Type", "type", func(f reflect.Type) bool { return f.Kind() == reflect.String && f.PkgPath() != "" }},
	}
	for i, w := range want {
		f := s.Field(i)
		if f.Name != w.name || f.Tag.Get("json") != w.tag || !w.ok(f.Type) {
			return false
		}
	}
	for i := len(want); i < s.NumField(); i++ {
		if s.Field(i).IsExported() {
			return false
		}
	}
	// The type field must marshal as its own string (MarshalText), or not at all.
	probe := reflect.New(s.Field(2).Type).Elem()
	probe.SetString("next")
	m, isText := probe.Interface().(encoding.TextMarshaler)
	if _, isJSON := probe.Interface().(json.Marshaler); isJSON {
		return false
	}
	if isText {
		b, err := m.MarshalText()
		if err != nil || string(b) != "next" {
			return false
		}
	}
	return true
}

// appendMessage appends v encoded as json.Marshal would to dst, or returns false
// when it cannot (see above); dst is then unchanged.
func appendMessage(dst []byte, v any) ([]byte, bool) {
	rv := reflect.ValueOf(v)
	if !rv.IsValid() || rv.Kind() != reflect.Pointer || rv.IsNil() || !isMessageShape(rv.Type()) {
		return dst, false
	}
	s := rv.Elem()
	payload, id, typ := s.Field(0).Bytes(), s.Field(1).String(), s.Field(2).String()
	if !plainJSON(payload) || !plainString(id) || !plainString(typ) {
		return dst, false
	}
	dst = slices.Grow(dst, len(payload)+len(id)+len(typ)+32)
	n := len(dst)
	dst = append(dst, '{')
	if len(payload) > 0 {
		dst = append(dst, `"payload":`...)
		dst = append(dst, payload...)
	}
	if id != "" {
		if len(dst) > n+1 {
			dst = append(dst, ',')
		}
		dst = append(dst, `"id":"`...)
		dst = append(dst, id...)
		dst = append(dst, '"')
	}
	if len(dst) > n+1 {
		dst = append(dst, ',')
	}
	dst = append(dst, `"type":"`...)
	dst = append(dst, typ...)
	dst = append(dst, '"', '}')
	return dst, true
}

// plainString reports whether encoding/json writes s between quotes unchanged:
// printable ASCII without '"', '\\', '<', '>' and '&' (anything else it escapes, or
// might: non-ASCII is left to it).
func plainString(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

// plainJSON reports whether json.Marshal copies the JSON text b unchanged when it
// is a json.RawMessage: no whitespace outside strings to compact and nothing it
// escapes ('<', '>', '&', U+2028 and U+2029, whose UTF-8 starts with 0xE2). It
// errs towards false: whitespace inside strings also makes it false.
func plainJSON(b []byte) bool {
	for _, c := range b {
		switch c {
		case ' ', '\t', '\n', '\r', '<', '>', '&', 0xE2:
			return false
		}
	}
	return true
}
