package httpapi

import (
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/latchkey/latchkey/ent/apikey"
	"github.com/latchkey/latchkey/internal/domain/keys"
	"github.com/latchkey/latchkey/internal/domain/verify"
	"github.com/latchkey/latchkey/internal/platform/fault"
	"github.com/latchkey/latchkey/internal/platform/limitspec"
	"github.com/latchkey/latchkey/internal/platform/reqctx"
	"github.com/latchkey/latchkey/internal/platform/viewer"
)

// maxVerifyBody bounds the body of POST /v1/keys/verify: a key, a cost, 100
// permissions of 64 characters and a tag fit with room to spare.
const maxVerifyBody = 16 << 10

// verifyBody is the JSON request of POST /v1/keys/verify.
type verifyBody struct {
	Key         *string  `json:"key"`
	Cost        *int     `json:"cost"`
	Permissions []string `json:"permissions"`
	Tag         *string  `json:"tag"`
	// Charges are named limits to charge: [{"name": "tokens", "cost": 250}].
	Charges []limitspec.Charge `json:"charges"`
}

// verifyAnswer is its JSON answer (the names are part of the public contract).
type verifyAnswer struct {
	Valid       bool                `json:"valid"`
	Code        verify.Code         `json:"code"`
	KeyID       *string             `json:"keyId"`
	OwnerID     *string             `json:"ownerId"`
	Name        *string             `json:"name"`
	Meta        map[string]any      `json:"meta"`
	Permissions []string            `json:"permissions"`
	Environment *apikey.Environment `json:"environment"`
	ExpiresAt   *time.Time          `json:"expiresAt"`
	RateLimit   *verifyLimit        `json:"rateLimit"`
	Quota       *verifyQuota        `json:"quota"`
	// RetryAfterSeconds is, for a refusal by a limit, how long until the same check
	// could pass (null otherwise).
	RetryAfterSeconds *int `json:"retryAfterSeconds"`
	// LimitScope names the limit that refused (key, owner, tenant, credits,
	// named:<name>); Credits is the key's balance after the check; OwnerMeta the meta
	// of the key's owner record.
	LimitScope *string        `json:"limitScope"`
	Credits    *int64         `json:"credits"`
	OwnerMeta  map[string]any `json:"ownerMeta"`

	// limit, quota and env hold what RateLimit, Quota and Environment point to.
	limit verifyLimit
	quota verifyQuota
	env   apikey.Environment
}

type verifyLimit struct {
	Limit     int       `json:"limit"`
	Remaining int       `json:"remaining"`
	ResetAt   time.Time `json:"resetAt"`
}

type verifyQuota struct {
	Limit     int64     `json:"limit"`
	Used      int64     `json:"used"`
	Remaining int64     `json:"remaining"`
	ResetAt   time.Time `json:"resetAt"`
}

// verifyHandler serves POST /v1/keys/verify for backends that do not speak GraphQL:
// the caller is a management key holding keys:verify (Authorization: Bearer, or
// X-API-Key), the body a JSON object {"key", "cost", "permissions", "tag"}. Every
// verification outcome, valid or not, is 200 with the answer; 401 and 403 are about
// the caller, 400 about the body, 429 a caller that verified too many unknown keys, 503
// limit stores that cannot be reached.
func (o Options) verifyHandler(w http.ResponseWriter, r *http.Request) {
	ctx := reqctx.WithClientIP(r.Context(), o.TrustedProxies.clientIP(r))
	var caller *viewer.Viewer
	if o.DisableAuth {
		caller = &viewer.Viewer{Admin: true, Scopes: viewer.AllScopes}
	} else {
		cred := keys.ExtractCredential(header(r.Header, hdrAPIKey), header(r.Header, hdrAuthorization))
		if cred == "" {
			o.refused(keys.ErrMissing)
			writeRESTError(w, keys.ErrMissing.APIError())
			return
		}
		v, err := o.verify(ctx, cred)
		if err != nil {
			writeRESTError(w, credentialError(err))
			return
		}
		caller = v
		noteViewer(ctx, v)
	}
	if !caller.Has(viewer.ScopeKeysVerify) {
		writeRESTError(w, fault.New(fault.Forbidden, "the calling key lacks the scope keys:verify").With("requiredScopes", []string{viewer.ScopeKeysVerify}))
		return
	}
	if ct := header(r.Header, hdrContentType); ct != "application/json" && !isJSON(ct) {
		writeRESTError(w, fault.New(fault.BadUserInput, "Content-Type must be application/json").With("reason", "content_type"))
		return
	}
	body, err := readBody(r, maxVerifyBody)
	if err != nil {
		writeRESTError(w, fault.New(fault.BadUserInput, "could not read the request body"))
		return
	}
	if len(body) > maxVerifyBody {
		writeRESTError(w, fault.New(fault.BadUserInput, "request body too large").With("limitBytes", maxVerifyBody))
		return
	}
	var in verifyBody
	if err := decodeVerifyBody(body, &in); err != nil {
		writeRESTError(w, fault.New(fault.BadUserInput, "the body must be one JSON object with key, cost, permissions, tag and charges"+jsonDetail(err)).With("reason", "json"))
		return
	}
	if in.Key == nil {
		writeRESTError(w, fault.BadInput("key", "key is required"))
		return
	}
	req := verify.Request{Key: *in.Key, Cost: verify.DefaultCost, Permissions: in.Permissions, Charges: in.Charges}
	if in.Cost != nil {
		req.Cost = *in.Cost
	}
	if in.Tag != nil {
		req.Tag = *in.Tag
	}
	res, err := o.Verifications.Verify(ctx, caller, req)
	if err != nil {
		writeRESTError(w, credentialError(err))
		return
	}
	var a verifyAnswer
	answerOf(&a, res)
	writeAnswer(w, &a)
}

// isJSON reports whether the media type of Content-Type ct is application/json.
func isJSON(ct string) bool {
	mt, _, _ := mime.ParseMediaType(ct)
	return mt == "application/json"
}

// answerOf fills a with the JSON answer of a verification.
func answerOf(a *verifyAnswer, res *verify.Result) {
	*a = verifyAnswer{Valid: res.Valid(), Code: res.Code, RetryAfterSeconds: res.RetryAfterSeconds(), Credits: res.Credits, OwnerMeta: res.OwnerMeta}
	if res.Scope != "" {
		a.LimitScope = &res.Scope
	}
	if k := res.Key; k != nil {
		a.env = k.Environment
		a.KeyID, a.OwnerID, a.Name, a.Meta, a.Permissions, a.Environment, a.ExpiresAt =
			&k.ID, k.OwnerID, &k.Name, k.Meta, k.Permissions, &a.env, k.ExpiresAt
	}
	if l := res.RateLimit; l != nil {
		a.limit = verifyLimit{Limit: l.Limit, Remaining: l.Remaining, ResetAt: l.ResetAt.UTC()}
		a.RateLimit = &a.limit
	}
	if q := res.Quota; q != nil {
		a.quota = verifyQuota{Limit: q.Limit, Used: q.Used, Remaining: q.Remaining, ResetAt: q.ResetAt.UTC()}
		a.Quota = &a.quota
	}
}

// credentialError turns an error of authentication or verification into the error to
// answer with (a database failure is a generic INTERNAL).
func credentialError(err error) *fault.Error {
	var ae *keys.AuthError
	var te *keys.ThrottledError
	var fe *fault.Error
	switch {
	case errors.As(err, &ae):
		return ae.APIError()
	case errors.As(err, &te):
		return te.APIError()
	case errors.As(err, &fe):
		return fe
	}
	return fault.New(fault.Internal, "temporarily unavailable")
}

// writeRESTError writes e as {"error": {"code", "message", ...details}} with the status
// and headers its code implies (refusalStatus).
func writeRESTError(w http.ResponseWriter, e *fault.Error) {
	status := refusalStatus(w.Header(), e)
	body := map[string]any{"code": e.Code, "message": e.Message}
	for k, v := range e.Extensions {
		body[k] = v
	}
	writeJSON(w, status, map[string]any{"error": body})
}

// jsonDetail says what was wrong with the JSON, in words that name only the request's
// own fields.
func jsonDetail(err error) string {
	var te *json.UnmarshalTypeError
	switch {
	case err == errTrailing:
		return ": one object only"
	case errors.As(err, &te) && te.Field != "":
		return ": " + te.Field + " has the wrong type"
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return ": " + strings.TrimPrefix(err.Error(), "json: ")
	}
	return ": malformed JSON"
}

// readBody reads r's body up to limit+1 bytes (more means too large), in one
// allocation of the announced size when the client sent Content-Length.
func readBody(r *http.Request, limit int64) ([]byte, error) {
	if n := r.ContentLength; n > 0 && n <= limit {
		body := make([]byte, n+1) // one spare byte tells a body longer than announced
		m, err := io.ReadFull(r.Body, body)
		if err == io.ErrUnexpectedEOF || err == io.EOF {
			err = nil
		}
		return body[:m], err
	}
	return io.ReadAll(io.LimitReader(r.Body, limit+1))
}
