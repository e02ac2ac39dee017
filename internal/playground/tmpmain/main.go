package main

import (
	"bufio"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"

	"github.com/latchkey/latchkey/internal/playground"
)

func readFrame(r *bufio.Reader) ([]byte, error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, err
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		io.ReadFull(r, b[:])
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		io.ReadFull(r, b[:])
		n = binary.BigEndian.Uint64(b[:])
	}
	var mask [4]byte
	io.ReadFull(r, mask[:])
	p := make([]byte, n)
	io.ReadFull(r, p)
	for i := range p {
		p[i] ^= mask[i%4]
	}
	if h[0]&0x0f == 8 {
		return nil, io.EOF
	}
	return p, nil
}

func writeFrame(w *bufio.Writer, p []byte) {
	w.WriteByte(0x81)
	if len(p) < 126 {
		w.WriteByte(byte(len(p)))
	} else {
		w.WriteByte(126)
		binary.Write(w, binary.BigEndian, uint16(len(p)))
	}
	w.Write(p)
	w.Flush()
}

func main() {
	mux := http.NewServeMux()
	playground.Register(mux, "Latchkey <Playground>", "/query")
	mux.HandleFunc("POST /query", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		log.Printf("HTTP X-API-Key=%q body=%.80s", r.Header.Get("X-API-Key"), b)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"data":{"viewer":{"isAdmin":true,"scopes":["keys:read"]}}}`)
	})
	mux.HandleFunc("GET /query", func(w http.ResponseWriter, r *http.Request) {
		log.Printf("WS upgrade protocol=%q", r.Header.Get("Sec-WebSocket-Protocol"))
		sum := sha1.Sum([]byte(r.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
		conn, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		fmt.Fprintf(rw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\nSec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n", base64.StdEncoding.EncodeToString(sum[:]))
		rw.Flush()
		for {
			p, err := readFrame(rw.Reader)
			if err != nil {
				return
			}
			log.Printf("WS recv %s", p)
			var m struct{ Type, ID string }
			json.Unmarshal(p, &m)
			switch m.Type {
			case "connection_init":
				writeFrame(rw.Writer, []byte(`{"type":"connection_ack"}`))
			case "subscribe":
				for i := 1; i <= 3; i++ {
					writeFrame(rw.Writer, fmt.Appendf(nil, `{"type":"next","id":%q,"payload":{"data":{"ticks":%d}}}`, m.ID, i))
				}
				writeFrame(rw.Writer, fmt.Appendf(nil, `{"type":"complete","id":%q}`, m.ID))
			}
		}
	})
	log.Fatal(http.ListenAndServe("127.0.0.1:"+os.Args[1], mux))
}
