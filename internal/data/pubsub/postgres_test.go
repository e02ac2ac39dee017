package pubsub

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/base64"
	"net/url"
	"strings"
	"testing"
	"time"

	_ "github.com/lib/pq"

	"github.com/latchkey/latchkey/internal/data/testdb"
)

// pgEnv is a fresh PostgreSQL database and a *sql.DB on it.
type pgEnv struct {
	url string
	db  *sql.DB
}

func newPGEnv(t *testing.T) pgEnv {
	t.Helper()
	u := testdb.URL(t, "postgres")
	db, err := sql.Open("postgres", u)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Ping(); err != nil {
		t.Fatal(err)
	}
	return pgEnv{url: u, db: db}
}

// bus starts a PostgreSQL bus on the environment's database and closes it when the
// test ends (unless the test closed it).
func (e pgEnv) bus(t *testing.T, cfg PostgresConfig) Bus {
	t.Helper()
	return e.busDSN(t, e.url, cfg)
}

func (e pgEnv) busDSN(t *testing.T, dsn string, cfg PostgresConfig) Bus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := NewPostgres(ctx, dsn, e.db, cfg)
	if err != nil {
		t.Fatalf("NewPostgres: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// TestPostgresSizes sends batches and single messages of various sizes between two instances.
func TestPostgresSizes(t *testing.T) {
	env := newPGEnv(t)
	// A long Tick so that everything published in a case is in one batch (after the
	// first message, which may be flushed at once).
	a := env.bus(t, PostgresConfig{Tick: 300 * time.Millisecond})
	b := env.bus(t, PostgresConfig{})

	binary := make([]byte, 3000)
	for i := range binary {
		binary[i] = byte(i * 7) // NULs, invalid UTF-8
	}
	rep := func(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }
	tests := []struct {
		name     string
		topic    string
		payloads [][]byte
		remote   bool // whether the messages reach the other instance
	}{
		{"batch over 8000 bytes is split", "split", [][]byte{rep(10, 'a'), rep(1500, 'b'), rep(1500, 'c'), rep(1500, 'd'), rep(1500, 'e'), rep(1500, 'f'), rep(1500, 'g')}, true},
		{"many max-size messages", "max", [][]byte{rep(MaxPayload-3, '1'), rep(MaxPayload-3, '2'), rep(MaxPayload-3, '3')}, true},
		{"binary payloads", "bin", [][]byte{binary, binary[1:], {0}, {}}, true},
		{"empty payload", "empty", [][]byte{{}}, true},
		{"oversize by one byte", "big", [][]byte{rep(MaxPayload-2, 'z')}, false},
		{"very large", "big", [][]byte{rep(1<<20, 'z')}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			local := a.Subscribe(tt.topic, len(tt.payloads))
			defer local.Close()
			remote := b.Subscribe(tt.topic, len(tt.payloads))
			defer remote.Close()
			before := a.Stats()
			total := 0
			for _, p := range tt.payloads {
				a.Publish(tt.topic, p)
				total += len(tt.topic) + len(p)
			}
			for i, want := range tt.payloads {
				if got := recv(t, local, 10*time.Millisecond); !bytes.Equal(got, want) {
					t.Fatalf("local message %d: got %d bytes, want %d", i, len(got), len(want))
				}
			}
			after := a.Stats()
			if !tt.remote {
				if got := after.Oversize - before.Oversize; got != uint64(len(tt.payloads)) {
					t.Errorf("Oversize grew by %d, want %d", got, len(tt.payloads))
				}
				// Nothing arrives: a marker published afterwards is the next message.
				a.Publish(tt.topic, []byte("marker"))
				if got := recv(t, remote, 2*time.Second); string(got) != "marker" {
					t.Fatalf("remote got %d bytes, want the marker", len(got))
				}
				return
			}
			for i, want := range tt.payloads {
				if got := recv(t, remote, 2*time.Second); !bytes.Equal(got, want) {
					t.Fatalf("remote message %d: got %d bytes, want %d", i, len(got), len(want))
				}
			}
			// The sender counts a NOTIFY when its statement returns, which can be
			// after the receiver got it.
			minNotifs := uint64((total + maxFrame - 1) / maxFrame)
			waitFor(t, func() bool { return a.Stats().Notifications-before.Notifications >= minNotifs })
			after = a.Stats()
			if notifs := after.Notifications - before.Notifications; notifs < minNotifs || notifs > uint64(len(tt.payloads)) {
				t.Errorf("%d bytes sent in %d notifications, want %d..%d", total, notifs, minNotifs, len(tt.payloads))
			}
			if after.Oversize != before.Oversize {
				t.Errorf("Oversize grew to %d", after.Oversize)
			}
		})
	}
}

func TestPack(t *testing.T) {
	if MaxPayload != 5845 {
		t.Errorf("MaxPayload = %d; update its documentation", MaxPayload)
	}
	b := newOutbox(&counters{}, strings.Repeat("i", maxInstanceID), time.Second, 1, MaxPayload, maxFrame, maxChunksPerStatement, nil)
	b.seq = 1 << 62 // the longest seq
	msg := func(topicLen, payloadLen int) outMsg {
		return outMsg{topic: strings.Repeat("t", topicLen), payload: bytes.Repeat([]byte{0xff}, payloadLen)}
	}
	many := func(n int, m outMsg) []outMsg {
		out := make([]outMsg, n)
		for i := range out {
			out[i] = m
		}
		return out
	}
	tests := []struct {
		name       string
		msgs       []outMsg
		wantChunks int
		wantN      int
	}{
		{"one small", []outMsg{msg(3, 10)}, 1, 1},
		{"one MaxPayload, all in the topic", []outMsg{msg(MaxPayload, 0)}, 1, 1},
		{"one MaxPayload, split topic/payload", []outMsg{msg(100, MaxPayload-100)}, 1, 1},
		{"two MaxPayload", []outMsg{msg(1, MaxPayload-1), msg(1, MaxPayload-1)}, 2, 2},
		{"1000 x 200 bytes, 27 per notification", many(1000, msg(8, 200)), 38, 1000},
		{"2000 x 200 bytes, capped per statement", many(2000, msg(8, 200)), maxChunksPerStatement, maxChunksPerStatement * 27},
		{"capped per statement", many(100, msg(1, 3000)), maxChunksPerStatement, maxChunksPerStatement},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			frames, n := b.pack(tt.msgs)
			chunks := make([]string, len(frames))
			for i, f := range frames {
				chunks[i] = base64.StdEncoding.EncodeToString(f)
			}
			if len(chunks) != tt.wantChunks || n != tt.wantN {
				t.Fatalf("pack: %d chunks holding %d messages, want %d holding %d", len(chunks), n, tt.wantChunks, tt.wantN)
			}
			var got []inMsg
			for _, c := range chunks {
				if len(c) > notifyLimit {
					t.Fatalf("chunk of %d bytes, limit %d", len(c), notifyLimit)
				}
				inst, msgs, err := decodeNotification(c, "self")
				if err != nil || inst != b.instanceID {
					t.Fatalf("decodeFrame: %q, %v", inst, err)
				}
				got = append(got, msgs...)
			}
			if len(got) != n {
				t.Fatalf("decoded %d messages, want %d", len(got), n)
			}
			for i := range got {
				if got[i].topic != tt.msgs[i].topic || !bytes.Equal(got[i].payload, tt.msgs[i].payload) {
					t.Fatalf("message %d differs after a round trip", i)
				}
			}
		})
	}
}

func TestDecodeFrameMalformed(t *testing.T) {
	enc := func(b ...byte) string { return base64.StdEncoding.EncodeToString(b) }
	tests := []struct {
		name string
		in   string
	}{
		{"not base64", "hello, world"},
		{"empty", ""},
		{"wrong version", enc(2, 1, 'a', 0, 1, 't', 1, 'p')},
		{"truncated instance", enc(1, 5, 'a')},
		{"no seq", enc(1, 1, 'a')},
		{"no messages", enc(1, 1, 'a', 7)},
		{"truncated payload", enc(1, 1, 'a', 7, 1, 't', 9, 'p')},
		{"missing payload", enc(1, 1, 'a', 7, 1, 't')},
		{"huge length", enc(1, 1, 'a', 7, 0xff, 0xff, 0xff, 0xff, 0x0f)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, msgs, err := decodeNotification(tt.in, "self"); err == nil {
				t.Fatalf("decodeFrame(%q) = %v, want an error", tt.in, msgs)
			}
		})
	}
	// A frame from self is recognized before its messages are decoded.
	if inst, msgs, err := decodeNotification(enc(1, 4, 's', 'e', 'l', 'f', 1, 1), "self"); err != nil || inst != "self" || msgs != nil {
		t.Fatalf("own frame: %q %v %v", inst, msgs, err)
	}
}

// decodeNotification decodes a NOTIFY payload: a base64-encoded frame.
func decodeNotification(s, self string) (instance string, msgs []inMsg, err error) {
	buf, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return "", nil, errMalformed
	}
	return decodeFrame(buf, self)
}

// waitFor fails the test unless cond becomes true within 2 seconds.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 2s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestPostgresCloseUnreachable checks that Close returns within its timeout and
// reports the messages it could not send when the database is gone.
func TestPostgresCloseUnreachable(t *testing.T) {
	env := newPGEnv(t)
	check := leakCheck(t)
	a := env.bus(t, PostgresConfig{Tick: time.Hour})
	a.Publish("t", []byte("1")) // flushed at once (first message)
	waitFor(t, func() bool { return a.Stats().Notifications == 1 })
	a.Publish("t", []byte("2")) // waits for the tick
	a.Publish("t", []byte("3"))
	if err := env.db.Close(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err := a.Close()
	if err == nil || !strings.Contains(err.Error(), "2 queued messages") {
		t.Fatalf("Close() = %v, want an error about 2 unsent messages", err)
	}
	if d := time.Since(start); d > closeFlushTimeout+time.Second {
		t.Errorf("Close took %v", d)
	}
	check()
}

func TestNewPostgresErrors(t *testing.T) {
	env := newPGEnv(t)
	u, err := url.Parse(env.url)
	if err != nil {
		t.Fatal(err)
	}
	noDB := *u
	noDB.Path = "/latchkey_no_such_database"
	badPort := *u
	badPort.Host = "127.0.0.1:1"
	badSSL := *u
	badSSL.RawQuery = "sslmode=bogus"

	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name    string
		ctx     context.Context
		dsn     string
		db      *sql.DB
		cfg     PostgresConfig
		wantErr string
	}{
		{"connection refused", context.Background(), badPort.String(), env.db, PostgresConfig{}, "connect"},
		{"no such database", context.Background(), noDB.String(), env.db, PostgresConfig{}, "latchkey_no_such_database"},
		{"malformed URL", context.Background(), "postgres://u:s3cret@127.0.0.1/%zz", env.db, PostgresConfig{}, "invalid dsn"},
		{"invalid sslmode", context.Background(), badSSL.String(), env.db, PostgresConfig{}, "sslmode"},
		{"context cancelled", canceled, badPort.String(), env.db, PostgresConfig{MinReconnect: time.Hour, MaxReconnect: time.Hour}, ""},
		{"nil db", context.Background(), env.url, nil, PostgresConfig{}, "db is nil"},
		{"instance ID too long", context.Background(), env.url, env.db, PostgresConfig{InstanceID: strings.Repeat("x", 65)}, "instance ID"},
		{"channel too long", context.Background(), env.url, env.db, PostgresConfig{Channel: strings.Repeat("c", 64)}, "channel"},
		{"negative tick", context.Background(), env.url, env.db, PostgresConfig{Tick: -1}, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			check := leakCheck(t)
			bus, err := NewPostgres(tt.ctx, tt.dsn, tt.db, tt.cfg)
			if err == nil {
				bus.Close()
				t.Fatal("NewPostgres succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not mention %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error %q contains the password", err)
			}
			t.Logf("error: %v", err)
			check()
		})
	}
}
