package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"entgo.io/ent/dialect/sql"

	"github.com/latchkey/latchkey/ent"
	"github.com/latchkey/latchkey/ent/schema/rule"
	entwebhook "github.com/latchkey/latchkey/ent/webhook"
	"github.com/latchkey/latchkey/ent/webhookdelivery"
	"github.com/latchkey/latchkey/internal/data/pubsub"
	"github.com/latchkey/latchkey/internal/data/txn"
	"github.com/latchkey/latchkey/internal/domain/audit"
)

// DefaultSchedule is the Standard Webhooks retry schedule: the delays after each failed
// attempt (so up to 8 attempts in about 27.5 hours).
var DefaultSchedule = []time.Duration{
	5 * time.Second, 5 * time.Minute, 30 * time.Minute,
	2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 10 * time.Hour,
}

// Defaults of Config.
const (
	DefaultJitter       = 0.1
	DefaultTimeout      = 15 * time.Second
	DefaultWorkers      = 64
	DefaultPerEndpoint  = 4
	DefaultPollInterval = 2 * time.Second
	DefaultDisableAfter = 5 * 24 * time.Hour
)

// UserAgent is sent with every delivery.
const UserAgent = "Latchkey-Webhooks/1"

// maxRetryAfter caps how long a Retry-After header can postpone an attempt.
const maxRetryAfter = 24 * time.Hour

// Config configures a Dispatcher. Zero fields take the documented defaults.
type Config struct {
	// Schedule holds the delays before each retry; once it is exhausted a failed
	// delivery is FAILED. nil means DefaultSchedule (WEBHOOK_RETRY_SCHEDULE); an empty,
	// non-nil schedule means a single attempt.
	Schedule []time.Duration
	// Jitter randomizes each delay by ±this fraction (default 0.1; negative: none).
	Jitter float64
	// Timeout bounds one attempt (default 15 s; the HTTP client's own timeout also applies).
	Timeout time.Duration
	// Lease is how long a claimed delivery stays invisible to other workers (default
	// 2*Timeout+15s; a Lease below Timeout is raised to 2*Timeout). A process killed
	// mid-delivery leaves the delivery to be retried, with the same id, after the lease.
	Lease time.Duration
	// Workers is the most sends this dispatcher has in flight at once (default 64).
	// A send is a goroutine waiting on the network, not on the CPU: what Workers bounds
	// is open connections, memory (tens of KiB per send) and the transactions that
	// record results. The default is large enough that, after PerTenant and Reserve,
	// several tenants whose endpoints all hang still leave room for everyone else.
	Workers int
	// PerEndpoint is the most concurrent sends to one webhook by this dispatcher
	// (default 4), so a slow endpoint cannot starve the others.
	PerEndpoint int
	// PerTenant is the most concurrent sends to one tenant's webhooks by this
	// dispatcher, so one tenant's slow or failing endpoints cannot take every worker.
	// Default Workers/4 (16 with the default Workers), but at least PerEndpoint+1, so
	// one stuck endpoint never stops its tenant's other endpoints; at most Workers.
	PerTenant int
	// Reserve is the number of workers kept for tenants with no send in flight: a
	// tenant that already has one starts another only while more than Reserve workers
	// are free. When several tenants' hanging endpoints hold every other worker, a
	// tenant with nothing in flight still finds one; only Reserve more tenants stuck at
	// once use them up. Default Workers/8 (at least 1, at most Workers-1); negative:
	// none.
	Reserve int
	// PollInterval is how often the database is polled when nothing wakes the
	// dispatcher (default 2 s).
	PollInterval time.Duration
	// DisableAfter disables an endpoint that has failed continuously for this long
	// (default 5 days), with a disabled_reason the tenant can see.
	DisableAfter time.Duration
	// Policy is the URL policy of deliveries (used for the default Client, and to refuse
	// http:// URLs unless AllowHTTP).
	Policy Policy
	// Client sends the requests; default NewHTTPClient(Policy).
	Client *http.Client
	// Now returns the current time (tests); default time.Now.
	Now func() time.Time
	// OnAttempt, if set, is called after each attempt is recorded (for metrics).
	OnAttempt func(AttemptResult)
}

// Outcome is what an attempt led to.
type Outcome string

// Outcomes of an attempt.
const (
	OutcomeDelivered Outcome = "delivered" // 2xx: the delivery is DELIVERED
	OutcomeRetry     Outcome = "retry"     // failed, another attempt is scheduled
	OutcomeFailed    Outcome = "failed"    // failed for good (schedule exhausted or 410 Gone)
	// OutcomeLeaseLost: the result was not recorded, because the delivery was changed or
	// deleted meanwhile, or the database failed; it is attempted again after the lease.
	OutcomeLeaseLost Outcome = "lease_lost"
)

// AttemptResult describes one delivery attempt, for metrics. It carries no secret and
// no payload.
type AttemptResult struct {
	DeliveryID string
	WebhookID  string
	TenantID   string
	EventID    string
	EventType  string
	Attempt    int // 1 for the first attempt
	At         time.Time
	StatusCode int // 0 when no response was received
	Latency    time.Duration
	Error      string // "" on success
	Outcome    Outcome
	// NextAttemptAt is when the next attempt is due (OutcomeRetry only).
	NextAttemptAt time.Time
	// Disabled is true when this attempt disabled the webhook (410 Gone or DisableAfter).
	Disabled bool
}

// ParseSchedule parses a comma-separated list of positive durations ("5s,5m,30m", the
// WEBHOOK_RETRY_SCHEDULE format). A blank string gives DefaultSchedule.
// It returns an error naming the first invalid entry.
func ParseSchedule(s string) ([]time.Duration, error) {
	if strings.TrimSpace(s) == "" {
		return append([]time.Duration(nil), DefaultSchedule...), nil
	}
	parts := strings.Split(s, ",")
	if len(parts) > 100 {
		return nil, fmt.Errorf("webhook: retry schedule has %d entries, at most 100 allowed", len(parts))
	}
	out := make([]time.Duration, 0, len(parts))
	for _, p := range parts {
		d, err := time.ParseDuration(strings.TrimSpace(p))
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("webhook: invalid retry delay %q (want a positive duration such as 5s or 30m)", strings.TrimSpace(p))
		}
		out = append(out, d)
	}
	return out, nil
}

// Dispatcher delivers pending webhook deliveries: it claims due rows with a lease,
// sends them outside any transaction and records every attempt. Several dispatchers
// (in one or several processes) may share a database: a delivery is never attempted
// by two of them at once. Create it with NewDispatcher and start it with Run.
//
// Workers are shared fairly across tenants (see Config.PerTenant and Config.Reserve,
// and claim): one tenant's slow or failing endpoints hold at most PerTenant of them,
// and a tenant with nothing in flight is served first when a worker frees. The limits
// are per dispatcher.
type Dispatcher struct {
	client   *ent.Client
	postgres bool
	cfg      Config

	wake  chan struct{}
	freed chan struct{}

	mu        sync.Mutex
	inflight  int
	perHook   map[string]int
	perTenant map[string]int
	nextDue   time.Time // earliest retry scheduled by this dispatcher, not yet due
	// idleDirty: deliveries of tenants with nothing in flight may be due that no claim
	// has seen since (set by Wake, the loop's timer and a delivery found come due;
	// idleGen counts the settings). A claim sees them in its window, or, when the
	// window is full, by a look that scans past the due rows of the tenants that are
	// sending; so it looks only when idleDirty, at most once per idleAfter.
	idleDirty bool
	idleGen   uint64
	idleAfter time.Time
	idleEmpty int // looks in a row that scanned and found nothing
	// warm holds the tenants whose last send in flight finished less than warmFor
	// ago: claims look for their next deliveries as for those of the sending tenants,
	// without waiting for idleDirty.
	warm      map[string]time.Time
	claimedAt time.Time // the now of the last claim
	// indexCost is the moving average of untilNextDue's query, which the index
	// answers without scanning: what a query costs on this database under this load.
	indexCost time.Duration
	wg        sync.WaitGroup

	// beforeRecord, when set (tests), runs after a send and before its result is
	// recorded; returning false abandons the result, as a process killed then would.
	beforeRecord func(deliveryID string) bool
}

// NewDispatcher returns a dispatcher for the deliveries in client's database. dialect is
// "postgres" (claims use FOR UPDATE SKIP LOCKED) or "sqlite". Zero fields of cfg take
// their defaults.
func NewDispatcher(client *ent.Client, dialect string, cfg Config) *Dispatcher {
	if cfg.Schedule == nil {
		cfg.Schedule = DefaultSchedule
	}
	cfg.Schedule = append([]time.Duration(nil), cfg.Schedule...)
	if cfg.Jitter == 0 {
		cfg.Jitter = DefaultJitter
	}
	if cfg.Jitter < 0 {
		cfg.Jitter = 0
	}
	if cfg.Jitter > 1 {
		cfg.Jitter = 1
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Lease <= 0 {
		cfg.Lease = defaultLease(cfg.Timeout)
	}
	if cfg.Lease < cfg.Timeout {
		cfg.Lease = 2 * cfg.Timeout
	}
	if cfg.Workers <= 0 {
		cfg.Workers = DefaultWorkers
	}
	if cfg.PerEndpoint <= 0 {
		cfg.PerEndpoint = DefaultPerEndpoint
	}
	if cfg.PerTenant <= 0 {
		cfg.PerTenant = max(cfg.Workers/4, cfg.PerEndpoint+1)
	}
	cfg.PerTenant = min(cfg.PerTenant, cfg.Workers)
	switch {
	case cfg.Reserve == 0:
		cfg.Reserve = max(cfg.Workers/8, 1)
	case cfg.Reserve < 0:
		cfg.Reserve = 0
	}
	cfg.Reserve = min(cfg.Reserve, cfg.Workers-1)
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.DisableAfter <= 0 {
		cfg.DisableAfter = DefaultDisableAfter
	}
	if cfg.Client == nil {
		cfg.Client = NewHTTPClient(cfg.Policy)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Dispatcher{
		client:    client,
		postgres:  dialect == "postgres",
		cfg:       cfg,
		wake:      make(chan struct{}, 1),
		freed:     make(chan struct{}, 1),
		perHook:   map[string]int{},
		perTenant: map[string]int{},
		warm:      map[string]time.Time{},
		idleDirty: true,
	}
}

// defaultLease is the lease of claimed deliveries when Config.Lease is unset.
func defaultLease(timeout time.Duration) time.Duration { return 2*timeout + 15*time.Second }

// Lease returns the configured lease of claimed deliveries.
func (d *Dispatcher) Lease() time.Duration { return d.cfg.Lease }

// Wake tells the dispatcher that deliveries are due (call it after committing Enqueue's
// transaction, and on cross-instance notifications). It never blocks and is safe on a nil
// Dispatcher.
func (d *Dispatcher) Wake() {
	if d == nil {
		return
	}
	d.markIdleDirty()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

func (d *Dispatcher) now() time.Time { return d.cfg.Now().UTC() }

// markIdleDirty notes that tenants with nothing in flight may have due deliveries.
func (d *Dispatcher) markIdleDirty() {
	d.mu.Lock()
	d.idleDirty = true
	d.idleGen++
	d.mu.Unlock()
}

// idleTurn reports whether this claim looks for the deliveries of tenants with nothing
// in flight (idle), and if so clears idleDirty. gen identifies the idleDirty seen.
func (d *Dispatcher) idleTurn() (idle bool, gen uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.idleDirty || time.Now().Before(d.idleAfter) {
		return false, d.idleGen
	}
	d.idleDirty = false
	return true, d.idleGen
}

// idleSeen records that a claim saw every due delivery of the tenants with nothing in
// flight: idleDirty is cleared unless set again since gen.
func (d *Dispatcher) idleSeen(gen uint64) {
	d.mu.Lock()
	if d.idleGen == gen {
		d.idleDirty = false
	}
	d.idleEmpty = 0
	d.mu.Unlock()
}

// idleDone records an idle query that took took and found found rows; again keeps
// idleDirty set. A look that finds nothing and takes more than ten indexed queries
// (indexCost) has scanned a backlog of the tenants that are sending: the next waits as
// long as it took, and after three such in a row nine times as long (at most half a
// second), so that these scans take at most a tenth of the claim loop until each takes
// more than 50 ms. Other looks do not delay the next.
func (d *Dispatcher) idleDone(took time.Duration, found int, again bool) {
	d.mu.Lock()
	var wait time.Duration
	if found == 0 && took > 10*d.indexCost {
		d.idleEmpty++
		wait = took
		if d.idleEmpty >= 3 {
			wait = min(9*took, 500*time.Millisecond)
		}
	} else {
		d.idleEmpty = 0
	}
	d.idleAfter = time.Now().Add(wait)
	if again {
		d.idleDirty = true
	}
	d.mu.Unlock()
}

// Run claims, sends and records deliveries until ctx is done, then waits for the sends
// in flight (each bounded by Timeout) and records their results. Call it once per
// Dispatcher. Database errors are logged and retried after PollInterval; Run returns nil
// once ctx is done and the in-flight sends are recorded.
func (d *Dispatcher) Run(ctx context.Context) error {
	// In-flight sends outlive ctx (bounded by Timeout) so their results are recorded.
	sendCtx := context.WithoutCancel(ctx)
	defer d.wg.Wait()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		if ctx.Err() != nil {
			return nil
		}
		wait, err := d.fill(ctx, sendCtx)
		if err != nil && ctx.Err() == nil {
			slog.WarnContext(ctx, "webhook dispatcher: claim failed", "err", err)
			wait = d.cfg.PollInterval
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
		case <-d.wake:
		case <-d.freed:
		case <-timer.C:
			d.markIdleDirty() // a delivery may have come due
		}
	}
}

// fill claims due deliveries while there are free workers and starts their sends. It
// returns how long to wait before looking again when nothing else wakes the loop.
func (d *Dispatcher) fill(ctx, sendCtx context.Context) (time.Duration, error) {
	for ctx.Err() == nil {
		u := d.usage()
		if u.free <= 0 {
			return d.cfg.PollInterval, nil // a finishing send wakes the loop
		}
		jobs, more, err := d.claim(ctx, u)
		if err != nil {
			return 0, err
		}
		for _, j := range jobs {
			d.wg.Add(1)
			go d.deliver(sendCtx, j)
		}
		if len(jobs) == 0 || !more {
			break // nothing more is due now
		}
	}
	return d.untilNextDue(ctx)
}

// usage is a snapshot of the dispatcher's workers, from which claims are built.
type usage struct {
	free      int      // workers not sending
	aboveRes  int      // free workers beyond the Reserve
	busyHooks []string // webhooks at their PerEndpoint limit
	sending   []string // tenants with sends in flight
	capped    []string // the tenants of sending at their PerTenant limit
	warm      []string // see Dispatcher.warm
	open      []string // the tenants of sending below their limit, and the warm ones
	room      int      // how many more sends the open tenants may start together
}

func (d *Dispatcher) usage() usage {
	d.mu.Lock()
	defer d.mu.Unlock()
	u := usage{free: d.cfg.Workers - d.inflight}
	u.aboveRes = u.free - d.cfg.Reserve
	for id, n := range d.perHook {
		if n >= d.cfg.PerEndpoint {
			u.busyHooks = append(u.busyHooks, id)
		}
	}
	for id, n := range d.perTenant {
		u.sending = append(u.sending, id)
		if n < d.cfg.PerTenant {
			u.open = append(u.open, id)
			u.room += d.cfg.PerTenant - n
		} else {
			u.capped = append(u.capped, id)
		}
	}
	now := time.Now()
	for id, until := range d.warm {
		if now.After(until) {
			delete(d.warm, id)
			continue
		}
		u.warm = append(u.warm, id)
		u.open = append(u.open, id)
		u.room += d.cfg.PerTenant
	}
	return u
}

// warmFor is how long a tenant stays warm after its last send in flight finished (see
// Dispatcher.warm): a tenant sending steadily has its next deliveries claimed without
// waiting for a Wake or a look.
const warmFor = time.Second

// byIdle splits rows, keeping their order, into those of tenants with nothing in
// flight and the others.
func (d *Dispatcher) byIdle(rows []*ent.WebhookDelivery) (idle, busy []*ent.WebhookDelivery) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, r := range rows {
		if d.perTenant[r.TenantID] == 0 {
			idle = append(idle, r)
		} else {
			busy = append(busy, r)
		}
	}
	return idle, busy
}

// take reserves worker slots for rows, in order, within Workers, PerEndpoint, PerTenant
// and Reserve. It returns the rows it reserved slots for and how many it left.
func (d *Dispatcher) take(rows []*ent.WebhookDelivery) (kept []*ent.WebhookDelivery, left int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, r := range rows {
		free, sending := d.cfg.Workers-d.inflight, d.perTenant[r.TenantID]
		if free > 0 && d.perHook[r.WebhookID] < d.cfg.PerEndpoint && sending < d.cfg.PerTenant &&
			(sending == 0 || free > d.cfg.Reserve) {
			d.inflight++
			d.perHook[r.WebhookID]++
			d.perTenant[r.TenantID]++
			delete(d.warm, r.TenantID)
			kept = append(kept, r)
		} else {
			left++
		}
	}
	return kept, left
}

// release frees the worker slot of a finished send and wakes the loop.
func (d *Dispatcher) release(r *ent.WebhookDelivery) {
	d.mu.Lock()
	d.inflight--
	if d.perHook[r.WebhookID]--; d.perHook[r.WebhookID] <= 0 {
		delete(d.perHook, r.WebhookID)
	}
	if d.perTenant[r.TenantID]--; d.perTenant[r.TenantID] <= 0 {
		delete(d.perTenant, r.TenantID)
		d.warm[r.TenantID] = time.Now().Add(warmFor)
	}
	d.mu.Unlock()
	select {
	case d.freed <- struct{}{}:
	default:
	}
}

// noteDue remembers that a retry is due at t, so the loop wakes for it without polling.
func (d *Dispatcher) noteDue(t time.Time) {
	d.mu.Lock()
	if d.nextDue.IsZero() || t.Before(d.nextDue) {
		d.nextDue = t
	}
	d.mu.Unlock()
	d.Wake()
}

// job is a claimed delivery and its webhook.
type job struct {
	d     *ent.WebhookDelivery
	hook  *ent.Webhook
	lease time.Time // the next_attempt_at the claim set: the fencing token of the result
}

// due returns the query of the deliveries that are due now, oldest first, to active
// webhooks.
func due(c *ent.Client, now time.Time) *ent.WebhookDeliveryQuery {
	return c.WebhookDelivery.Query().
		Where(
			webhookdelivery.StatusEQ(webhookdelivery.StatusPending),
			webhookdelivery.Or(webhookdelivery.NextAttemptAtIsNil(), webhookdelivery.NextAttemptAtLTE(now)),
			webhookdelivery.HasWebhookWith(entwebhook.Active(true)),
		).
		Order(webhookdelivery.ByNextAttemptAt(), webhookdelivery.ByID())
}

// claim selects due deliveries within the limits of u (skipping rows other workers
// have locked on PostgreSQL), reserves worker slots for them, moves their
// next_attempt_at to now+Lease and commits. It returns the claimed jobs, and more when
// further deliveries may be due (a query filled its limit, or rows were left for lack
// of a slot).
//
// Fairness across tenants: the claim reads a window of the oldest due deliveries,
// leaving out the tenants at their PerTenant limit and the webhooks at their
// PerEndpoint limit. It takes the rows of tenants with nothing in flight first; when
// the window is full and such tenants' deliveries may have come due (idleDirty), it
// looks past the window for them; only then do the tenants already sending take the
// rest, never the last Reserve free workers. So a waiting tenant gets the next free
// worker ahead of another's older backlog. The look scans the due rows of the tenants
// it leaves out, so it runs at most once per idleAfter; it selects no tenant of the
// window, so no row is selected twice.
func (d *Dispatcher) claim(ctx context.Context, u usage) (jobs []job, more bool, err error) {
	idle, gen := d.idleTurn()
	if !idle && (len(u.open) == 0 || (u.aboveRes <= 0 && len(u.warm) == 0)) {
		return nil, false, nil // nothing this claim may take
	}
	sctx := rule.SystemContext(ctx)
	now := d.now()
	lease := now.Add(d.cfg.Lease).Truncate(time.Microsecond)
	tx, err := d.client.Tx(sctx)
	if err != nil {
		if idle {
			d.markIdleDirty()
		}
		return nil, false, err
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	fields := []string{
		webhookdelivery.FieldTenantID, webhookdelivery.FieldWebhookID, webhookdelivery.FieldEventID,
		webhookdelivery.FieldEventType, webhookdelivery.FieldPayload, webhookdelivery.FieldAttempts,
	}
	query := func(q *ent.WebhookDeliveryQuery, limit int) ([]*ent.WebhookDelivery, error) {
		q.Limit(limit).Select(fields...)
		if d.postgres {
			q.ForUpdate(sql.WithLockAction(sql.SkipLocked))
		}
		rows, err := q.All(sctx)
		if len(rows) == limit {
			more = true
		}
		return rows, err
	}

	d.mu.Lock()
	d.claimedAt = now
	d.mu.Unlock()
	// The window: the oldest due deliveries of the tenants below their limit.
	limit := u.free
	if !idle {
		limit = min(u.free, u.room) // the idle tenants have none that the last claim left
	}
	q := due(tx.Client(), now)
	if len(u.capped) > 0 {
		q.Where(webhookdelivery.TenantIDNotIn(u.capped...))
	}
	if len(u.busyHooks) > 0 {
		q.Where(webhookdelivery.WebhookIDNotIn(u.busyHooks...))
	}
	rows, err := query(q, limit)
	if err != nil {
		if idle {
			d.markIdleDirty()
		}
		return nil, false, err
	}
	// Reserve slots now, so no other claim of this dispatcher exceeds the limits:
	// first for the tenants with nothing in flight, then for the others.
	idleRows, busyRows := d.byIdle(rows)
	kept, left := d.take(idleRows)
	switch {
	case len(rows) < limit:
		d.idleSeen(gen) // the window held every due delivery of the idle tenants
	case idle:
		// Others may wait behind a full window: look past it for the tenants with
		// nothing in flight that are not in it, before the busy rows take workers.
		skip := slices.Concat(u.sending, u.warm)
		for _, r := range rows {
			skip = append(skip, r.TenantID)
		}
		slices.Sort(skip)
		skip = slices.Compact(skip)
		lim := min(d.usage().free, d.cfg.PerTenant)
		if lim <= 0 {
			d.markIdleDirty() // no worker left: look when one frees
			break
		}
		start := time.Now()
		rows, err := query(due(tx.Client(), now).Where(webhookdelivery.TenantIDNotIn(skip...)), lim)
		if err != nil {
			d.unreserve(kept)
			d.markIdleDirty()
			return nil, false, err
		}
		k, l := d.take(rows)
		kept, left = append(kept, k...), left+l
		d.idleDone(time.Since(start), len(rows), len(rows) == lim)
	}
	k, l := d.take(busyRows)
	kept, left = append(kept, k...), left+l
	if left > 0 {
		more = true
	}
	if len(kept) == 0 {
		return nil, more, tx.Commit()
	}
	ids := make([]string, len(kept))
	for i, r := range kept {
		ids[i] = r.ID
	}
	if err = tx.WebhookDelivery.Update().
		Where(webhookdelivery.IDIn(ids...)).
		SetNextAttemptAt(lease).
		Exec(sctx); err != nil {
		d.unreserve(kept)
		return nil, false, err
	}
	if err = tx.Commit(); err != nil {
		d.unreserve(kept)
		return nil, false, err
	}
	// Load the webhooks after the commit: secrets and URL as they are now.
	hookIDs := make([]string, 0, len(kept))
	for _, r := range kept {
		hookIDs = append(hookIDs, r.WebhookID)
	}
	hooks, herr := d.client.Webhook.Query().Where(entwebhook.IDIn(hookIDs...)).All(sctx)
	if herr != nil {
		// The claims stand; the deliveries are retried when their lease expires.
		d.unreserve(kept)
		return nil, more, herr
	}
	byID := make(map[string]*ent.Webhook, len(hooks))
	for _, h := range hooks {
		byID[h.ID] = h
	}
	for _, r := range kept {
		h := byID[r.WebhookID]
		if h == nil || !h.Active {
			// Deleted or disabled since the claim: leave it; it is due again after
			// the lease if the webhook is re-activated.
			d.release(r)
			continue
		}
		jobs = append(jobs, job{d: r, hook: h, lease: lease})
	}
	return jobs, more, nil
}

// unreserve frees the slots take reserved for rows that will not be sent.
func (d *Dispatcher) unreserve(rows []*ent.WebhookDelivery) {
	for _, r := range rows {
		d.release(r)
	}
}

// untilNextDue returns how long to sleep before a delivery may be claimable (at most
// PollInterval). The deliveries already due that the last claim left are waiting for a
// send to finish, which wakes the loop, or for idleAfter; so only those coming due
// after that claim are looked up, which the index on (status, next_attempt_at) finds
// without scanning a backlog.
func (d *Dispatcher) untilNextDue(ctx context.Context) (time.Duration, error) {
	now := d.now()
	next := now.Add(d.cfg.PollInterval)
	d.mu.Lock()
	if !d.nextDue.IsZero() {
		if d.nextDue.After(now) && d.nextDue.Before(next) {
			next = d.nextDue
		}
		if !d.nextDue.After(now) {
			d.nextDue = time.Time{}
		}
	}
	free, claimedAt, idleAt := d.cfg.Workers-d.inflight, d.claimedAt, now.Add(time.Until(d.idleAfter))
	wait := next.Sub(now)
	if d.idleDirty {
		wait = min(wait, idleAt.Sub(now))
	}
	d.mu.Unlock()
	if free <= 0 {
		return d.cfg.PollInterval, nil // a finishing send wakes the loop
	}
	start := time.Now()
	first, err := d.client.WebhookDelivery.Query().
		Where(
			webhookdelivery.StatusEQ(webhookdelivery.StatusPending),
			webhookdelivery.NextAttemptAtGT(claimedAt),
			webhookdelivery.HasWebhookWith(entwebhook.Active(true)),
		).
		Order(webhookdelivery.ByNextAttemptAt()).
		Select(webhookdelivery.FieldNextAttemptAt).
		First(rule.SystemContext(ctx))
	took := time.Since(start)
	d.mu.Lock()
	d.indexCost += (took - d.indexCost) / 8
	d.mu.Unlock()
	switch {
	case ent.IsNotFound(err):
	case err != nil:
		return d.cfg.PollInterval, err
	case first.NextAttemptAt != nil:
		at := *first.NextAttemptAt
		if !at.After(now) {
			// Came due since the last claim: the next one takes it, looking past
			// its window if need be, which may have to wait for idleAfter.
			d.markIdleDirty()
			if idleAt.After(at) {
				at = idleAt
			}
		}
		wait = min(wait, at.Sub(now))
	}
	return max(wait, time.Millisecond), nil
}

// deliver sends one claimed delivery and records the attempt.
func (d *Dispatcher) deliver(ctx context.Context, j job) {
	defer d.wg.Done()
	defer d.release(j.d)
	res := d.send(ctx, j)
	if d.beforeRecord != nil && !d.beforeRecord(j.d.ID) {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	d.record(rctx, j, &res)
	if res.Outcome == OutcomeRetry {
		d.noteDue(res.NextAttemptAt)
	}
	if d.cfg.OnAttempt != nil {
		d.cfg.OnAttempt(res.AttemptResult)
	}
}

// sent is the result of one HTTP attempt before it is recorded.
type sent struct {
	AttemptResult
	retryAfter time.Duration // from a 429/503 Retry-After header
}

// send makes one HTTP attempt of j.
func (d *Dispatcher) send(ctx context.Context, j job) sent {
	// Stored times have microsecond precision; keep them exact.
	at := d.now().Truncate(time.Microsecond)
	res := sent{AttemptResult: AttemptResult{
		DeliveryID: j.d.ID, WebhookID: j.d.WebhookID, TenantID: j.d.TenantID,
		EventID: j.d.EventID, EventType: j.d.EventType, Attempt: j.d.Attempts + 1, At: at,
	}}
	u, err := url.Parse(j.hook.URL)
	if err != nil || !(u.Scheme == "https" || (u.Scheme == "http" && d.cfg.Policy.AllowHTTP)) {
		res.Error = "URL not allowed: must use https"
		return res
	}
	body := []byte(j.d.Payload)
	secrets := []string{j.hook.Secret}
	if ps, exp := j.hook.PreviousSecret, j.hook.PreviousSecretExpiresAt; ps != nil && *ps != "" && exp != nil && exp.After(at) {
		secrets = append(secrets, *ps)
	}
	sig, err := Sign(secrets, j.d.EventID, at, body)
	if err != nil {
		res.Error = "invalid signing secret; rotate the webhook's secret"
		return res
	}
	actx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, j.hook.URL, bytes.NewReader(body))
	if err != nil {
		res.Error = "invalid URL"
		return res
	}
	req.Header.Set("content-type", "application/json")
	req.Header.Set("user-agent", UserAgent)
	req.Header.Set("webhook-id", j.d.EventID)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(at.Unix(), 10))
	req.Header.Set("webhook-signature", sig)
	start := time.Now()
	resp, err := d.cfg.Client.Do(req)
	if err != nil {
		res.Latency = time.Since(start)
		res.Error = describeError(err, d.cfg.Timeout)
		return res
	}
	// Drain a little of the body so the connection can be reused; it is not stored.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	res.Latency = time.Since(start)
	res.StatusCode = resp.StatusCode
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		res.Error = "HTTP " + resp.Status
		if resp.Status == "" || !strings.HasPrefix(resp.Status, strconv.Itoa(resp.StatusCode)) {
			res.Error = "HTTP " + strconv.Itoa(resp.StatusCode)
		}
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
			res.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), at)
		}
	}
	return res
}

// describeError returns a short description of a failed request: no URL (its query
// may hold a token), no secret.
func describeError(err error, timeout time.Duration) string {
	if ue, ok := isPolicyError(err); ok {
		return ue.Reason
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return "timeout after " + timeout.String()
	}
	var uerr *url.Error
	if errors.As(err, &uerr) {
		if uerr.Timeout() {
			return "timeout after " + timeout.String()
		}
		err = uerr.Err
	}
	return truncate(err.Error(), 300)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// parseRetryAfter reads a Retry-After header (delay in seconds or an HTTP date),
// capped at maxRetryAfter; 0 when absent or invalid.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		if secs > int64(maxRetryAfter/time.Second) {
			return maxRetryAfter
		}
		d = time.Duration(secs) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), maxRetryAfter)
}

// delay returns the jittered delay before the retry that follows failed attempt n
// (1-based), and false when the schedule is exhausted.
func (d *Dispatcher) delay(n int) (time.Duration, bool) {
	if n > len(d.cfg.Schedule) {
		return 0, false
	}
	base := d.cfg.Schedule[n-1]
	if d.cfg.Jitter > 0 {
		f := 1 + d.cfg.Jitter*(2*rand.Float64()-1)
		base = time.Duration(float64(base) * f)
	}
	return base, true
}

// record writes the attempt: the delivery's state and summary, a WebhookAttempt row and
// the webhook's health, in one transaction under rule.SystemContext. The delivery is
// updated only while it still carries this claim's lease; otherwise (claimed again after
// the lease expired, redelivered, deleted) nothing is written.
func (d *Dispatcher) record(ctx context.Context, j job, res *sent) {
	sctx := rule.SystemContext(ctx)
	h := j.hook
	status := webhookdelivery.StatusPending
	var disableReason string
	switch {
	case res.Error == "":
		status = webhookdelivery.StatusDelivered
		res.Outcome = OutcomeDelivered
	case res.StatusCode == http.StatusGone:
		status = webhookdelivery.StatusFailed
		res.Outcome = OutcomeFailed
		disableReason = "endpoint returned 410 Gone"
	default:
		if delay, ok := d.delay(res.Attempt); ok {
			if res.retryAfter > delay {
				delay = res.retryAfter
			}
			res.Outcome = OutcomeRetry
			res.NextAttemptAt = res.At.Add(delay).Truncate(time.Microsecond)
		} else {
			status = webhookdelivery.StatusFailed
			res.Outcome = OutcomeFailed
		}
		if h.FailingSince != nil && res.At.Sub(*h.FailingSince) > d.cfg.DisableAfter {
			disableReason = fmt.Sprintf("endpoint failed continuously for more than %s (since %s); last error: %s",
				formatDuration(d.cfg.DisableAfter), h.FailingSince.UTC().Format(time.RFC3339), res.Error)
		}
	}
	latencyMs := int(res.Latency.Milliseconds())

	err := func() (err error) {
		tx, err := d.client.Tx(sctx)
		if err != nil {
			return err
		}
		defer func() {
			if err != nil {
				_ = tx.Rollback()
			}
		}()
		upd := tx.WebhookDelivery.Update().
			Where(
				webhookdelivery.ID(j.d.ID),
				webhookdelivery.StatusEQ(webhookdelivery.StatusPending),
				webhookdelivery.NextAttemptAt(j.lease),
			).
			SetStatus(status).
			SetAttempts(res.Attempt).
			SetLastAttemptAt(res.At).
			SetLatencyMs(latencyMs)
		if res.StatusCode != 0 {
			upd.SetResponseStatus(res.StatusCode)
		} else {
			upd.ClearResponseStatus()
		}
		if res.Error != "" {
			upd.SetError(res.Error)
		} else {
			upd.ClearError()
		}
		if res.Outcome == OutcomeRetry {
			upd.SetNextAttemptAt(res.NextAttemptAt)
		} else {
			upd.ClearNextAttemptAt()
		}
		n, err := upd.Save(sctx)
		if err != nil {
			return err
		}
		if n == 0 {
			res.Outcome = OutcomeLeaseLost
			return errLeaseLost
		}
		attempt := tx.WebhookAttempt.Create().
			SetTenantID(j.d.TenantID).
			SetDeliveryID(j.d.ID).
			SetAttempt(res.Attempt).
			SetAt(res.At).
			SetLatencyMs(latencyMs)
		if res.StatusCode != 0 {
			attempt.SetStatusCode(res.StatusCode)
		}
		if res.Error != "" {
			attempt.SetError(res.Error)
		}
		if res.Outcome == OutcomeRetry {
			attempt.SetNextAttemptAt(res.NextAttemptAt)
		}
		if err := attempt.Exec(sctx); err != nil {
			return err
		}
		// Webhook health. Bulk updates are not audited (routine); disabling is.
		quiet := audit.WithAction(sctx, "")
		switch {
		case res.Outcome == OutcomeDelivered && h.FailingSince != nil:
			err = tx.Webhook.Update().
				Where(entwebhook.ID(h.ID), entwebhook.FailingSinceNotNil()).
				ClearFailingSince().Exec(quiet)
		case res.Outcome != OutcomeDelivered && h.FailingSince == nil:
			err = tx.Webhook.Update().
				Where(entwebhook.ID(h.ID), entwebhook.FailingSinceIsNil()).
				SetFailingSince(res.At).Exec(quiet)
		}
		if err != nil {
			return err
		}
		if disableReason != "" {
			err = tx.Webhook.UpdateOneID(h.ID).
				Where(entwebhook.Active(true)).
				SetActive(false).
				SetDisabledReason(disableReason).
				Exec(audit.WithAction(sctx, "webhook.disabled"))
			switch {
			case ent.IsNotFound(err):
				err = nil // already disabled (or deleted)
			case err == nil:
				res.Disabled = true
			}
			if err != nil {
				return err
			}
		}
		if err := d.announce(sctx, tx, j, res, disableReason); err != nil {
			return err
		}
		return tx.Commit()
	}()
	switch {
	case errors.Is(err, errLeaseLost):
		slog.WarnContext(ctx, "webhook dispatcher: delivery changed while in flight; attempt not recorded",
			"delivery", j.d.ID, "webhook", h.ID, "attempt", res.Attempt)
	case err != nil:
		// The claim's lease expires and the delivery is attempted again (same id).
		res.Outcome = OutcomeLeaseLost
		res.Disabled = false
		slog.ErrorContext(ctx, "webhook dispatcher: recording attempt failed",
			"delivery", j.d.ID, "webhook", h.ID, "attempt", res.Attempt, "err", err)
	}
}

var errLeaseLost = errors.New("webhook: lease lost")

// announce enqueues, in the attempt's transaction, webhook.delivery_failed when the
// delivery failed for good and webhook.disabled when this attempt disabled its
// endpoint (by 410 Gone, or failing for DisableAfter while retries were left): the
// tenant's other endpoints learn of it (never the failing one). A failed delivery of
// one of these two events announces nothing, so an endpoint that fails them cannot
// feed a loop. The event ids derive from the delivery and the endpoint, so a retried
// transaction writes them once.
func (d *Dispatcher) announce(ctx context.Context, tx *ent.Tx, j job, res *sent, disableReason string) error {
	if j.d.EventType == EventWebhookDeliveryFailed || j.d.EventType == EventWebhookDisabled {
		return nil
	}
	client := tx.Client()
	var n int
	if res.Outcome == OutcomeFailed {
		data := map[string]any{"webhook": map[string]any{"id": j.hook.ID, "url": j.hook.URL}, "delivery": map[string]any{
			"id": j.d.ID, "eventID": j.d.EventID, "eventType": j.d.EventType, "attempts": res.Attempt,
			"responseStatus": res.StatusCode, "error": res.Error,
		}}
		m, err := enqueue(ctx, client, Event{Type: EventWebhookDeliveryFailed, TenantID: j.d.TenantID, Data: data, At: res.At}, "msg_whfail_"+j.d.ID, j.hook.ID)
		if err != nil {
			return err
		}
		n += m
	}
	if res.Disabled {
		data := map[string]any{"webhook": map[string]any{"id": j.hook.ID, "url": j.hook.URL, "disabledReason": disableReason}}
		m, err := enqueue(ctx, client, Event{Type: EventWebhookDisabled, TenantID: j.d.TenantID, Data: data, At: res.At},
			fmt.Sprintf("msg_whdis_%s_%d", j.hook.ID, res.At.Unix()), j.hook.ID)
		if err != nil {
			return err
		}
		n += m
	}
	if n > 0 {
		txn.OnCommit(tx, d.Wake)
	}
	return nil
}

// formatDuration prints d in days when it is a whole number of days ("5 days").
func formatDuration(d time.Duration) string {
	const day = 24 * time.Hour
	if d >= day && d%day == 0 {
		if d == day {
			return "1 day"
		}
		return strconv.Itoa(int(d/day)) + " days"
	}
	return d.String()
}

// Follow wakes the dispatcher on every message of wakes (other instances' commits,
// through the instance bus) until ctx ends or the subscription closes.
func (d *Dispatcher) Follow(ctx context.Context, wakes *pubsub.Subscription) {
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-wakes.C():
			if !ok {
				return
			}
			d.Wake()
		}
	}
}

// Backlog reports the deliveries waiting for an attempt and how long the oldest due
// one has waited (for metrics). It returns the database's error.
func Backlog(ctx context.Context, client *ent.Client) (pending int, oldest time.Duration, err error) {
	sctx := rule.SystemContext(ctx)
	pending, err = client.WebhookDelivery.Query().Where(webhookdelivery.StatusEQ(webhookdelivery.StatusPending)).Count(sctx)
	if err != nil {
		return 0, 0, err
	}
	d, err := client.WebhookDelivery.Query().
		Where(webhookdelivery.StatusEQ(webhookdelivery.StatusPending), webhookdelivery.NextAttemptAtLTE(time.Now())).
		Order(webhookdelivery.ByNextAttemptAt()).First(sctx)
	switch {
	case ent.IsNotFound(err):
		return pending, 0, nil
	case err != nil:
		return pending, 0, err
	case d.NextAttemptAt != nil:
		oldest = time.Since(*d.NextAttemptAt)
	}
	return pending, oldest, nil
}
