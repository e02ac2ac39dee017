package wsgorilla_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/gorilla/websocket"
)

// TestMain lets the test binary double as a load generator (see loadgen):
// memory is measured in the server's process without the clients in it.
func TestMain(m *testing.M) {
	if os.Getenv("WSGORILLA_LOADGEN") != "" {
		os.Exit(loadgen())
	}
	os.Exit(m.Run())
}

// connect dials url, completes connection_init/connection_ack and, if
// subscribe, starts one subscription (id "1"). It does not use testing.T, so
// it can run in any goroutine and in the load generator.
func connect(url, protocol string, subscribe bool) (*websocket.Conn, error) {
	d := websocket.Dialer{Subprotocols: []string{protocol}, HandshakeTimeout: timeout}
	conn, resp, err := d.Dial(url, nil)
	if err != nil {
		return nil, err
	}
	_ = resp.Body.Close()
	fail := func(err error) (*websocket.Conn, error) {
		_ = conn.Close()
		return nil, err
	}
	_ = conn.SetWriteDeadline(time.Now().Add(timeout))
	if err := conn.WriteJSON(msg{Type: "connection_init", Payload: json.RawMessage(`{}`)}); err != nil {
		return fail(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(timeout))
	var ack msg
	if err := conn.ReadJSON(&ack); err != nil {
		return fail(err)
	}
	if ack.Type != "connection_ack" {
		return fail(fmt.Errorf("got %q, want connection_ack", ack.Type))
	}
	if subscribe {
		start := "subscribe"
		if protocol == legacyWS {
			start = "start"
		}
		if err := conn.WriteJSON(msg{Type: start, ID: "1", Payload: json.RawMessage(subQuery)}); err != nil {
			return fail(err)
		}
	}
	_ = conn.SetReadDeadline(time.Time{})
	_ = conn.SetWriteDeadline(time.Time{})
	return conn, nil
}

// connectAll opens n connections with a few dialing workers.
func connectAll(url, protocol string, n int, subscribe bool) ([]*websocket.Conn, error) {
	conns := make([]*websocket.Conn, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	next := make(chan int)
	for range 32 {
		wg.Go(func() {
			for i := range next {
				conns[i], errs[i] = connect(url, protocol, subscribe)
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return conns, errors.Join(errs...)
}

// closeAll closes connections concurrently, with a closing handshake
// (graceful) or by dropping the TCP connection.
func closeAll(conns []*websocket.Conn, graceful bool) {
	var wg sync.WaitGroup
	for _, c := range conns {
		if c == nil {
			continue
		}
		wg.Go(func() {
			if graceful {
				_ = c.WriteControl(websocket.CloseMessage,
					websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(timeout))
				_ = c.SetReadDeadline(time.Now().Add(timeout))
				for {
					if _, _, err := c.ReadMessage(); err != nil {
						break
					}
				}
			}
			_ = c.Close()
		})
	}
	wg.Wait()
}

// loadgen opens WSGORILLA_N connections to WSGORILLA_URL, prints "ready",
// waits for stdin to close, then closes them all.
func loadgen() int {
	n, _ := strconv.Atoi(os.Getenv("WSGORILLA_N"))
	conns, err := connectAll(os.Getenv("WSGORILLA_URL"), os.Getenv("WSGORILLA_PROTOCOL"), n,
		os.Getenv("WSGORILLA_SUBSCRIBE") == "1")
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	closeAll(conns, true)
	return 0
}

func TestManyConnectionsNoLeak(t *testing.T) {
	const n = 200
	tests := []struct {
		name     string
		protocol string
		graceful bool
	}{
		{"graphql-transport-ws, closing handshake", transportWS, true},
		{"graphql-ws, closing handshake", legacyWS, true},
		{"graphql-transport-ws, TCP dropped", transportWS, false},
		{"graphql-ws, TCP dropped", legacyWS, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Keep-alives add a goroutine and a ticker per connection; they
			// must go too.
			h := newHarness(t, transport.Websocket{
				KeepAlivePingInterval: time.Second,
				PingPongInterval:      time.Second,
			})
			before := runtime.NumGoroutine()
			conns, err := connectAll(h.url, tt.protocol, n, true)
			t.Cleanup(func() { closeAll(conns, false) })
			if err != nil {
				t.Fatal(err)
			}
			waitFor(t, "all subscriptions", func() bool { return h.ops.Load() == n })
			t.Logf("%d server goroutines per subscribed connection", (runtime.NumGoroutine()-before)/n)

			closeAll(conns, tt.graceful)
			for range n {
				h.closeCode(t)
			}
			// The harness verifies with goleak that every connection,
			// keep-alive and subscription goroutine has exited.
		})
	}
}

// TestIdleMemoryPerConnection measures the server's memory per idle
// connection: 1,000 clients in a child process connect and are acked (and
// optionally subscribe), then the server's heap and stack growth is divided
// by the number of connections. Run with -v to see the numbers.
func TestIdleMemoryPerConnection(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 1,000 connections")
	}
	if raceEnabled {
		t.Skip("memory figures are meaningless under the race detector")
	}
	const (
		n      = 1000
		target = 64 << 10
	)
	tests := []struct {
		name      string
		protocol  string
		subscribe bool
		ws        transport.Websocket
	}{
		{"graphql-transport-ws, acked", transportWS, false, transport.Websocket{}},
		{"graphql-transport-ws, 1 subscription", transportWS, true, transport.Websocket{}},
		{"graphql-transport-ws, 1 subscription, PingPongInterval", transportWS, true,
			transport.Websocket{PingPongInterval: 10 * time.Second}},
		{"graphql-ws, 1 subscription, KeepAlivePingInterval", legacyWS, true,
			transport.Websocket{KeepAlivePingInterval: 10 * time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.ws)
			before, goroutines := memNow()

			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), "WSGORILLA_LOADGEN=1", "WSGORILLA_URL="+h.url,
				"WSGORILLA_PROTOCOL="+tt.protocol, "WSGORILLA_N="+strconv.Itoa(n),
				"WSGORILLA_SUBSCRIBE="+map[bool]string{true: "1", false: "0"}[tt.subscribe])
			cmd.Stderr = os.Stderr
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() {
				_ = stdin.Close() // the child closes its connections and exits
				if err := cmd.Wait(); err != nil {
					t.Errorf("load generator: %v", err)
				}
				for range n {
					h.closeCode(t)
				}
			}()
			line, _ := bufio.NewReader(stdout).ReadString('\n')
			if line != "ready\n" {
				t.Fatalf("load generator: %q", line)
			}
			waitFor(t, "all inits", func() bool { return h.inits.Load() == n })
			if tt.subscribe {
				waitFor(t, "all subscriptions", func() bool { return h.ops.Load() == n })
			}
			time.Sleep(100 * time.Millisecond) // let the last goroutines park

			after, goroutinesAfter := memNow()
			heap := (int64(after.HeapInuse) - int64(before.HeapInuse)) / n
			live := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / n
			stack := (int64(after.StackInuse) - int64(before.StackInuse)) / n
			t.Logf("per idle connection: %.1f KiB total = heap in use %.1f KiB (live objects %.1f KiB) + goroutine stacks %.1f KiB; %.1f goroutines",
				kib(heap+stack), kib(heap), kib(live), kib(stack), float64(goroutinesAfter-goroutines)/n)
			if heap+stack > target {
				t.Errorf("%.1f KiB per idle connection, target < %d KiB", kib(heap+stack), target>>10)
			}
		})
	}
}

func memNow() (runtime.MemStats, int) {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m, runtime.NumGoroutine()
}

func kib(b int64) float64 { return float64(b) / 1024 }
