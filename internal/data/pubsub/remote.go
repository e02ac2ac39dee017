package pubsub

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Wire format shared by the buses that reach other instances. A frame is
//
//	frame   = version(1 byte, 1) uvarint(len(instance)) instance uvarint(seq) message+
//	message = uvarint(len(topic)) topic uvarint(len(payload)) payload
//
// which is the envelope {instance, msgs: [{t: topic, p: payload}]} in a compact form.
// seq numbers frames per instance; on PostgreSQL it also keeps two identical frames
// sent in one transaction from being merged. The PostgreSQL bus sends each frame as
// the base64 text of one NOTIFY; the Redis bus sends the bytes as one PUBLISH.

const (
	frameVersion = 1

	// maxInstanceID is the longest InstanceID accepted.
	maxInstanceID = 64
	// maxHeader bounds a frame's header: version, instance ID and seq.
	maxHeader = 1 + 1 + maxInstanceID + binary.MaxVarintLen64

	logInterval      = 10 * time.Second
	defaultQueueSize = 100_000
	maxRetryDelay    = time.Second // backoff cap after failed sends
)

// outMsg is a message waiting to be sent to other instances.
type outMsg struct {
	topic   string
	payload []byte
}

// sendFunc sends frames to the other instances, in order; it reports an error when
// they may not have been sent (they are then sent again).
type sendFunc func(ctx context.Context, frames [][]byte) error

// outbox is the outgoing half of a bus that reaches other instances: a bounded
// queue that Publish appends to without blocking, and a goroutine that sends what
// is queued, at most once per tick (unless a batch must be split), packed in frames.
// Messages stay queued until a send succeeded, so they leave in publication order.
type outbox struct {
	stats      *counters
	instanceID string
	tick       time.Duration
	queueSize  int
	maxPayload int // largest len(topic)+len(payload) sent
	maxFrame   int // largest frame
	maxFrames  int // frames per send
	headerMax  int
	send       sendFunc

	sendTimeout, closeTimeout time.Duration
	runCtx                    context.Context // sends are cancelled with it

	qmu     sync.Mutex
	q       []outMsg
	qClosed bool
	wake    chan struct{} // signalled when q becomes non-empty
	seq     uint64        // frame sequence number, sender goroutine only

	stop     chan struct{}
	done     chan struct{}
	closeErr error

	oversizeLog, queueLog, sendLog logLimiter
}

func newOutbox(stats *counters, instanceID string, tick time.Duration, queueSize, maxPayload, maxFrame, maxFrames int, send sendFunc) *outbox {
	return &outbox{
		stats: stats, instanceID: instanceID, tick: tick, queueSize: queueSize,
		maxPayload: maxPayload, maxFrame: maxFrame, maxFrames: maxFrames, send: send,
		headerMax: 1 + uvarintLen(uint64(len(instanceID))) + len(instanceID) + binary.MaxVarintLen64,
		wake:      make(chan struct{}, 1),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
		runCtx:    context.Background(),

		oversizeLog: logLimiter{interval: logInterval},
		queueLog:    logLimiter{interval: logInterval},
		sendLog:     logLimiter{interval: logInterval},
	}
}

// enqueue queues a message for other instances, or counts it as Oversize or
// QueueDropped. It never blocks.
func (o *outbox) enqueue(topic string, payload []byte) {
	if len(topic)+len(payload) > o.maxPayload {
		o.stats.oversize.Add(1)
		o.oversizeLog.warn("pubsub: message too large for other instances, delivered locally only",
			"topic", topic, "size", len(topic)+len(payload), "max", o.maxPayload)
		return
	}
	o.qmu.Lock()
	if o.qClosed {
		o.qmu.Unlock()
		return
	}
	if len(o.q) >= o.queueSize {
		o.qmu.Unlock()
		o.stats.queueDropped.Add(1)
		o.queueLog.warn("pubsub: outgoing queue full, message delivered locally only",
			"topic", topic, "queue_size", o.queueSize)
		return
	}
	wasEmpty := len(o.q) == 0
	o.q = append(o.q, outMsg{topic: topic, payload: payload})
	o.qmu.Unlock()
	if wasEmpty {
		o.signalWake()
	}
}

func (o *outbox) signalWake() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// close stops the sender after a final flush (within closeTimeout) and returns an
// error saying how many messages were not sent, if any. It must be called once, and
// only after run was started.
func (o *outbox) close() error {
	close(o.stop)
	<-o.done
	return o.closeErr
}

// run sends queued messages until close: when the queue becomes non-empty it waits
// until one tick has passed since the previous send, then sends everything queued.
func (o *outbox) run() {
	defer close(o.done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var last time.Time
	delay := o.tick // time between sends; grows after failures
	for {
		select {
		case <-o.stop:
			o.finalFlush()
			return
		case <-o.wake:
		}
		if d := time.Until(last.Add(delay)); d > 0 {
			timer.Reset(d)
			select {
			case <-o.stop:
				timer.Stop()
				o.finalFlush()
				return
			case <-timer.C:
			}
		}
		last = time.Now()
		ctx, cancel := context.WithTimeout(o.runCtx, o.sendTimeout)
		more, err := o.flush(ctx)
		cancel()
		if err != nil {
			delay = min(max(2*delay, o.tick), max(maxRetryDelay, o.tick))
			o.stats.notifyErr.Add(1)
			o.sendLog.warn("pubsub: sending to other instances failed, will retry", "err", err, "retry_in", delay)
		} else {
			delay = o.tick
		}
		if err != nil || more {
			o.signalWake()
		}
	}
}

func (o *outbox) finalFlush() {
	o.qmu.Lock()
	o.qClosed = true
	o.qmu.Unlock()
	ctx, cancel := context.WithTimeout(o.runCtx, o.closeTimeout)
	defer cancel()
	if _, err := o.flush(ctx); err != nil {
		o.stats.notifyErr.Add(1)
		o.qmu.Lock()
		n := len(o.q)
		o.q = nil
		o.qmu.Unlock()
		o.closeErr = fmt.Errorf("pubsub: close: %d queued messages were not sent to other instances: %w", n, err)
	}
}

// flush sends the messages queued when it starts, removing each send's messages
// from the queue once sent. It reports whether more messages were queued meanwhile.
func (o *outbox) flush(ctx context.Context) (more bool, err error) {
	o.qmu.Lock()
	pending := o.q // enqueue only appends beyond len(pending): reading it unlocked is safe
	o.qmu.Unlock()
	for len(pending) > 0 {
		frames, n := o.pack(pending)
		if err := o.send(ctx, frames); err != nil {
			return false, err
		}
		o.stats.notifications.Add(uint64(len(frames)))
		pending = pending[n:]
		o.qmu.Lock()
		clear(o.q[:n]) // release the payloads
		o.q = o.q[n:]
		if len(o.q) == 0 {
			o.q = nil
		}
		more = len(o.q) > len(pending)
		o.qmu.Unlock()
	}
	return more, nil
}

// pack encodes a prefix of msgs as at most maxFrames frames of at most maxFrame
// bytes each and returns them and the number of messages they hold. Every queued
// message fits in a frame on its own (see maxPayload).
func (o *outbox) pack(msgs []outMsg) (frames [][]byte, n int) {
	for n < len(msgs) && len(frames) < o.maxFrames {
		size, start := o.headerMax, n
		for n < len(msgs) {
			sz := messageSize(msgs[n].topic, msgs[n].payload)
			if size+sz > o.maxFrame && n > start {
				break
			}
			size += sz
			n++
		}
		o.seq++
		frame := make([]byte, 0, size)
		frame = append(frame, frameVersion)
		frame = binary.AppendUvarint(frame, uint64(len(o.instanceID)))
		frame = append(frame, o.instanceID...)
		frame = binary.AppendUvarint(frame, o.seq)
		for _, m := range msgs[start:n] {
			frame = binary.AppendUvarint(frame, uint64(len(m.topic)))
			frame = append(frame, m.topic...)
			frame = binary.AppendUvarint(frame, uint64(len(m.payload)))
			frame = append(frame, m.payload...)
		}
		frames = append(frames, frame)
	}
	return frames, n
}

func messageSize(topic string, payload []byte) int {
	return uvarintLen(uint64(len(topic))) + len(topic) + uvarintLen(uint64(len(payload))) + len(payload)
}

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

type inMsg struct {
	topic   string
	payload []byte
}

var errMalformed = errors.New("malformed frame")

// decodeFrame decodes a frame. It returns the sender's instance ID and, unless the
// sender is self, the messages. Payloads share buf, each capped so that appending to
// one cannot overwrite the next.
func decodeFrame(buf []byte, self string) (instance string, msgs []inMsg, err error) {
	if len(buf) == 0 || buf[0] != frameVersion {
		return "", nil, errMalformed
	}
	buf = buf[1:]
	next := func() ([]byte, bool) {
		l, k := binary.Uvarint(buf)
		if k <= 0 || l > uint64(len(buf)-k) {
			return nil, false
		}
		v := buf[k : k+int(l) : k+int(l)]
		buf = buf[k+int(l):]
		return v, true
	}
	inst, ok := next()
	if !ok {
		return "", nil, errMalformed
	}
	if string(inst) == self {
		return self, nil, nil
	}
	_, k := binary.Uvarint(buf) // seq
	if k <= 0 {
		return "", nil, errMalformed
	}
	buf = buf[k:]
	for len(buf) > 0 {
		topic, ok1 := next()
		payload, ok2 := next()
		if !ok1 || !ok2 {
			return "", nil, errMalformed
		}
		msgs = append(msgs, inMsg{topic: string(topic), payload: payload})
	}
	if len(msgs) == 0 {
		return "", nil, errMalformed
	}
	return string(inst), msgs, nil
}

// receive delivers the messages of a frame received from the transport to local
// subscribers, unless this instance sent it. It counts what it received and
// malformed frames (ignored, and logged through log with the channel's name).
func receive(h *hub, stats *counters, self string, frame []byte, log *logLimiter, channel string) {
	inst, msgs, err := decodeFrame(frame, self)
	if err != nil {
		stats.malformed.Add(1)
		log.warn("pubsub: ignoring malformed message", "channel", channel, "size", len(frame))
		return
	}
	if inst == self {
		return
	}
	stats.received.Add(uint64(len(msgs)))
	for _, m := range msgs {
		h.deliver(m.topic, m.payload)
	}
}

// reconnectHooks holds the OnReconnect callbacks of a remote bus.
type reconnectHooks struct {
	mu  sync.Mutex
	fns []func()
}

// add registers f (ignoring nil).
func (h *reconnectHooks) add(f func()) {
	if f == nil {
		return
	}
	h.mu.Lock()
	h.fns = append(h.fns, f)
	h.mu.Unlock()
}

// run calls the callbacks registered so far, without holding the lock.
func (h *reconnectHooks) run() {
	h.mu.Lock()
	fns := h.fns[:len(h.fns):len(h.fns)]
	h.mu.Unlock()
	for _, f := range fns {
		f()
	}
}
