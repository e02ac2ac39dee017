package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"unicode/utf8"
)

// errTrailing is decodeVerifyBody's error for a body with more after its object.
var errTrailing = errors.New("more than one JSON value")

// decodeVerifyBody decodes body into in exactly as a json.Decoder with
// DisallowUnknownFields would, and, like the decoder's More, refuses a second value
// after the object. It returns encoding/json's error (a *json.SyntaxError, a
// *json.UnmarshalTypeError, an unknown field, io.EOF for an empty body) or
// errTrailing.
//
// The body every backend sends (the exact field names, each once; strings without
// escapes; a plain integer cost; no charges) is read by hand in a tenth of the time;
// anything else goes to encoding/json, so the two never disagree (FuzzVerifyBody
// compares them).
func decodeVerifyBody(body []byte, in *verifyBody) error {
	if readVerifyBody(body, in) {
		return nil
	}
	*in = verifyBody{}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(in); err != nil {
		return err
	}
	if dec.More() {
		return errTrailing
	}
	return nil
}

// readVerifyBody reads the common body into in and reports whether it could; on
// false, in holds partial values and the caller decodes again.
func readVerifyBody(body []byte, in *verifyBody) bool {
	s := scanner{b: body, text: string(body)}
	if !s.byte('{') {
		return false
	}
	if s.byte('}') {
		return s.end()
	}
	var seen uint8
	for {
		name, ok := s.str()
		if !ok || !s.byte(':') {
			return false
		}
		var bit uint8
		switch name {
		case "key":
			bit, in.Key, ok = 1, nil, true
			if !s.null() {
				in.Key, ok = s.strPtr()
			}
		case "cost":
			bit, in.Cost, ok = 2, nil, true
			if !s.null() {
				in.Cost, ok = s.int()
			}
		case "permissions":
			bit, in.Permissions, ok = 4, nil, true
			if !s.null() {
				in.Permissions, ok = s.strs()
			}
		case "tag":
			bit, in.Tag, ok = 8, nil, true
			if !s.null() {
				in.Tag, ok = s.strPtr()
			}
		default: // charges, another spelling, an unknown field
			return false
		}
		if !ok || seen&bit != 0 {
			return false
		}
		seen |= bit
		if s.byte('}') {
			return s.end()
		}
		if !s.byte(',') {
			return false
		}
	}
}

// scanner reads JSON tokens from b, skipping the whitespace before each. The
// strings it returns share one copy of b, text.
type scanner struct {
	b    []byte
	text string
	i    int
}

func (s *scanner) skip() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// byte consumes c if it comes next.
func (s *scanner) byte(c byte) bool {
	s.skip()
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// end reports whether only whitespace is left.
func (s *scanner) end() bool {
	s.skip()
	return s.i == len(s.b)
}

// null consumes a null followed by a delimiter.
func (s *scanner) null() bool {
	s.skip()
	if bytes.HasPrefix(s.b[s.i:], []byte("null")) && s.delimited(s.i+4) {
		s.i += 4
		return true
	}
	return false
}

// delimited reports whether a literal ending at j is followed by what may follow a
// value: whitespace, a comma, a closing bracket or the end.
func (s *scanner) delimited(j int) bool {
	if j == len(s.b) {
		return true
	}
	switch s.b[j] {
	case ' ', '\t', '\n', '\r', ',', '}', ']':
		return true
	}
	return false
}

// str reads a string without escapes or control characters, of valid UTF-8.
func (s *scanner) str() (string, bool) {
	if !s.byte('"') {
		return "", false
	}
	start, ascii := s.i, true
	for ; s.i < len(s.b); s.i++ {
		switch c := s.b[s.i]; {
		case c == '"':
			v := s.b[start:s.i]
			s.i++
			if !ascii && !utf8.Valid(v) {
				return "", false // encoding/json replaces invalid bytes
			}
			return s.text[start : s.i-1], true
		case c == '\\' || c < 0x20:
			return "", false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return "", false
}

func (s *scanner) strPtr() (*string, bool) {
	v, ok := s.str()
	return &v, ok
}

// strs reads an array of such strings.
func (s *scanner) strs() ([]string, bool) {
	if !s.byte('[') {
		return nil, false
	}
	out := []string{}
	if s.byte(']') {
		return out, true
	}
	for {
		v, ok := s.str()
		if !ok {
			return nil, false
		}
		out = append(out, v)
		if s.byte(']') {
			return out, true
		}
		if !s.byte(',') {
			return nil, false
		}
	}
}

// int reads an integer of at most 18 digits (no fraction, no exponent).
func (s *scanner) int() (*int, bool) {
	s.skip()
	j, neg := s.i, false
	if j < len(s.b) && s.b[j] == '-' {
		neg = true
		j++
	}
	start, n := j, 0
	for ; j < len(s.b) && s.b[j] >= '0' && s.b[j] <= '9'; j++ {
		n = n*10 + int(s.b[j]-'0')
	}
	digits := j - start
	if digits == 0 || digits > 18 || digits > 1 && s.b[start] == '0' || !s.delimited(j) {
		return nil, false
	}
	s.i = j
	if neg {
		n = -n
	}
	return &n, true
}
