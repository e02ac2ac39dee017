package httpapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
)

// verifyBodyCases are bodies for both paths of decodeVerifyBody: the hand-read common
// ones and every kind that goes to encoding/json.
var verifyBodyCases = []struct {
	body string
	fast bool // read by hand, without encoding/json
}{
	{`{"key":"acme_live_abc","permissions":[],"tag":"bench"}`, true},
	{` {"key" : "k" , "cost" : 3 , "permissions" : [ "a:read" , "b" ] , "tag" : null } ` + "\n", true},
	{`{"key":"k","cost":-0}`, true},
	{`{"key":"k","cost":-12}`, true},
	{`{"key":"k","cost":999999999999999999}`, true},
	{`{"key":null,"cost":null,"permissions":null,"tag":null}`, true},
	{`{}`, true},
	{`{"key":"clé ✓"}`, true},
	{`{"key":"k","cost":1000000000000000000}`, false}, // 19 digits
	{`{"key":"k","cost":99999999999999999999}`, false},
	{`{"key":"k","cost":1.5}`, false},
	{`{"key":"k","cost":1e3}`, false},
	{`{"key":"k","cost":01}`, false},
	{`{"key":"k","cost":-}`, false},
	{`{"key":"k","cost":"3"}`, false},
	{`{"key":"k","cost":true}`, false},
	{`{"key":"k\u00e9"}`, false},
	{`{"key":"k\"x"}`, false},
	{"{\"key\":\"k\xff\"}", false},
	{"{\"key\":\"a\tb\"}", false},
	{`{"Key":"k"}`, false},
	{`{"KEY":"k"}`, false},
	{`{"key":"k","key":"j"}`, false},
	{`{"key":"k","extra":1}`, false},
	{`{"key":"k","charges":[{"name":"tokens","cost":250}]}`, false},
	{`{"key":"k","permissions":[null]}`, false},
	{`{"key":"k","permissions":["a",]}`, false},
	{`{"key":"k","permissions":"a"}`, false},
	{`{"key":"k",}`, false},
	{`{"key":"k"}{"key":"j"}`, false},
	{`{"key":"k"} x`, false},
	{`{"key":"k"}}`, false},
	{`{"key":"k"}]`, false},
	{`{"key":"k"`, false},
	{`{"key":nul}`, false},
	{`{"key":nullx}`, false},
	{`{"key":1}`, false},
	{`["key"]`, false},
	{`null`, false},
	{``, false},
	{`   `, false},
	{`{"key":"k","cost":3,"permissions":["a"],"tag":"t","tag":"u"}`, false},
}

// decodeStd is the reference: a json.Decoder with DisallowUnknownFields, then More.
func decodeStd(body []byte) (verifyBody, error) {
	var in verifyBody
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return in, err
	}
	if dec.More() {
		return in, errTrailing
	}
	return in, nil
}

// checkVerifyBody fails t if decodeVerifyBody and encoding/json disagree on body, and
// says whether the body was read by hand.
func checkVerifyBody(t *testing.T, body []byte) (fast bool) {
	t.Helper()
	var hand verifyBody
	fast = readVerifyBody(body, &hand)
	var got verifyBody
	gotErr := decodeVerifyBody(body, &got)
	want, wantErr := decodeStd(body)
	if fmt.Sprint(gotErr) != fmt.Sprint(wantErr) {
		t.Fatalf("%q: error %v, encoding/json %v", body, gotErr, wantErr)
	}
	if wantErr != nil {
		if fast {
			t.Fatalf("%q: read by hand, but encoding/json refuses it: %v", body, wantErr)
		}
		return fast
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%q: decoded %s, encoding/json %s", body, show(got), show(want))
	}
	if fast && !reflect.DeepEqual(hand, want) {
		t.Fatalf("%q: read by hand as %s, encoding/json %s", body, show(hand), show(want))
	}
	return fast
}

func show(v verifyBody) string {
	s := func(p *string) string {
		if p == nil {
			return "nil"
		}
		return fmt.Sprintf("%q", *p)
	}
	cost := "nil"
	if v.Cost != nil {
		cost = fmt.Sprint(*v.Cost)
	}
	return fmt.Sprintf("{key %s cost %s permissions %#v tag %s charges %#v}", s(v.Key), cost, v.Permissions, s(v.Tag), v.Charges)
}

// The hand-read path gives what encoding/json gives, errors included, and is taken
// for the common bodies only.
func TestDecodeVerifyBody(t *testing.T) {
	for _, c := range verifyBodyCases {
		if fast := checkVerifyBody(t, []byte(c.body)); fast != c.fast {
			t.Errorf("%q: read by hand %v, want %v", c.body, fast, c.fast)
		}
	}
}

// FuzzVerifyBody compares decodeVerifyBody with encoding/json on any body:
// go test -fuzz FuzzVerifyBody ./internal/transport/httpapi
func FuzzVerifyBody(f *testing.F) {
	for _, c := range verifyBodyCases {
		f.Add([]byte(c.body))
	}
	f.Fuzz(func(t *testing.T, body []byte) { checkVerifyBody(t, body) })
}

// BenchmarkDecodeVerifyBody compares the hand-read common body with encoding/json.
func BenchmarkDecodeVerifyBody(b *testing.B) {
	body := []byte(`{"key":"acme_live_3xK9pQ2mZ7vR4tY8wB1nC6dF5gH0jL2kM9sA4","permissions":[],"tag":"bench"}`)
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := decodeStd(body); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("hand", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var in verifyBody
			if err := decodeVerifyBody(body, &in); err != nil {
				b.Fatal(err)
			}
		}
	})
}
